// Artifacts: every name with its versions; the code of a Python or shell version in a read-only viewer
// (set as text, never parsed as HTML).

import { el } from "./registry.js";

const TEXT_KINDS = new Set(["python", "shell"]);

export const artifactsPanel = {
  id: "artifacts",
  title: "Artifacts",
  view: "code",
  mount(section, cockpit) {
    const list = el("ul", { className: "artifacts" });
    const title = el("h3", {}, "");
    const code = el("pre", { className: "code", tabIndex: 0, "aria-label": "artifact source (read-only)" });
    const refresh = el("button", { type: "button" }, "refresh");
    section.append(refresh, list, title, code);

    async function open(meta) {
      title.textContent = `${meta.name} ${meta.version} · ${meta.filename} · ${meta.size} bytes`;
      if (!TEXT_KINDS.has(meta.kind)) { code.textContent = `(${meta.kind}: a binary, not shown)`; return; }
      try {
        const response = await fetch(`/api/v1/artifacts/${cockpit.api.path(meta.name, meta.version)}/source`, {
          headers: { Authorization: `Bearer ${cockpit.token}` }, cache: "no-store",
        });
        if (response.status === 404) { code.textContent = "this node does not hold the bytes (another node serves them)"; return; }
        if (!response.ok) { code.textContent = `HTTP ${response.status}`; return; }
        code.textContent = await response.text();
        code.dataset.artifact = meta.artifactId;
      } catch (err) {
        code.textContent = `the node did not answer (${err.message})`;
      }
    }

    async function load() {
      try {
        const answer = await cockpit.api.get("/api/v1/artifacts");
        const byName = new Map();
        for (const a of answer.artifacts ?? []) {
          if (!byName.has(a.name)) byName.set(a.name, []);
          byName.get(a.name).push(a);
        }
        list.replaceChildren(
          ...[...byName].map(([name, versions]) =>
            el("li", { dataset: { name } }, el("span", { className: "name" }, `${name} `),
              ...versions.map((v) => {
                const b = el("button", { type: "button", className: "version", dataset: { version: v.version }, title: `${v.kind} · ${v.sha256?.slice(0, 12)}` }, v.version);
                b.addEventListener("click", () => open(v));
                return b;
              })),
          ),
        );
        if (!byName.size) list.replaceChildren(el("li", { className: "muted" }, "no artifacts (swarm artifact push)"));
      } catch (err) {
        list.replaceChildren(el("li", { className: "error" }, `cannot list artifacts: ${err.message}`));
      }
    }

    refresh.addEventListener("click", load);
    cockpit.on("ready", load);
    cockpit.on("view", (name) => { if (name === "code") load(); });
  },
};
