// Optimisation suggestions for the shown DAG (GET /api/v1/dags/{id}/analytics), each with one click to
// apply it as a new DAG version (POST /api/v1/dag/define), the define answer shown.

import { applySuggestion, canApply, define, describeDefine, knownVersions } from "../versions.js";
import { el } from "./registry.js";

export const suggestionsPanel = {
  id: "suggestions",
  title: "Optimisation",
  view: "insight",
  mount(section, cockpit) {
    const head = el("div", { className: "muted" }, "select a DAG for its suggestions");
    const list = el("ul", { className: "suggestions" });
    const result = el("pre", { className: "define-result" });
    section.append(head, list, result);
    let dagId = null;

    async function apply(suggestion, button) {
      button.disabled = true;
      try {
        const latest = (await cockpit.api.get(`/api/v1/dags/${cockpit.api.path(dagId)}`)).definition;
        const applied = applySuggestion(latest, suggestion, await knownVersions(cockpit.api, dagId));
        if (!applied) { result.textContent = `${suggestion.action} cannot be applied automatically`; return; }
        const answer = await define(cockpit.api, applied.definition);
        result.textContent = `${applied.change}\n${describeDefine(answer)}`;
        result.dataset.version = answer.version;
        result.dataset.status = answer.status;
        cockpit.refreshListsSoon();
        if (answer.status === "CREATED") await cockpit.selectDag(dagId, answer.version);
      } catch (err) {
        result.textContent = `refused (${err.status}): ${err.message}`;
        button.disabled = false;
      }
    }

    function render(suggestions) {
      list.replaceChildren(
        ...suggestions.map((s) => {
          const button = el("button", { type: "button", className: "apply" }, "apply");
          button.disabled = !canApply(s) || !cockpit.canSubmit;
          button.title = !canApply(s) ? "this one needs a person" : cockpit.canSubmit ? "define a new version with it" : "a viewer cannot define";
          button.addEventListener("click", () => apply(s, button));
          const gain = Number(s.expectedGainSeconds) > 0 ? ` · saves ~${Number(s.expectedGainSeconds).toFixed(1)} s` : "";
          return el("li", { dataset: { nodeId: s.nodeId ?? "", action: s.action } },
            el("div", { className: "action" }, `${s.action} · ${s.nodeId ?? "DAG"}${gain}`),
            el("div", { className: "meta" }, s.message), button);
        }),
      );
      if (!suggestions.length) list.replaceChildren(el("li", { className: "muted" }, "no suggestions (they need 5 runs of history)"));
    }

    async function load(id) {
      dagId = id;
      try {
        const analytics = await cockpit.api.get(`/api/v1/dags/${cockpit.api.path(id)}/analytics`);
        head.textContent = `${id} v${analytics.version}: ${analytics.samples} samples`;
        render(analytics.suggestions ?? []);
      } catch (err) {
        head.textContent = `no analytics for ${id}: ${err.message}`;
        render([]);
      }
    }

    cockpit.on("dag", ({ dagId: id }) => load(id));
    // Tests and demos can show a suggestion without waiting for five runs: it goes through the same path.
    section.show = (id, suggestions) => { dagId = id; render(suggestions); };
  },
};
