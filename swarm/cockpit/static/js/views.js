// Views: which panels show (monitor, devices, insight, code) or the designer over the universe. A tab
// strip in the top bar; keys 1-5; the palette's "show …" commands.

import { el } from "./panels/registry.js";

export const VIEWS = [
  { id: "monitor", title: "Monitor", key: "1" },
  { id: "devices", title: "Devices", key: "2" },
  { id: "insight", title: "Insight", key: "3" },
  { id: "code", title: "Artifacts", key: "4" },
  { id: "designer", title: "Designer", key: "5" },
];

/** Tab buttons into `nav`; `show(id)` is called on a click. */
export function mountTabs(nav, show) {
  nav.replaceChildren(
    ...VIEWS.map((v) => {
      const b = el("button", { type: "button", role: "tab", dataset: { view: v.id }, title: `${v.title} (key ${v.key})` }, v.title);
      b.addEventListener("click", () => show(v.id));
      return b;
    }),
  );
}

/** Show view `id`: panels of that view (runs always), the designer overlay for "designer". */
export function applyView(id, { nav, panels, designer }) {
  const view = VIEWS.some((v) => v.id === id) ? id : "monitor";
  document.body.dataset.view = view;
  for (const b of nav.querySelectorAll("button")) b.setAttribute("aria-selected", String(b.dataset.view === view));
  for (const section of panels.children) {
    const own = section.dataset.view;
    section.hidden = view === "designer" || (own !== undefined && own !== "all" && own !== view);
  }
  designer.hidden = view !== "designer";
  return view;
}
