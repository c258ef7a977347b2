// Panels are modules: each exports `{id, title, mount(section, cockpit)}`; `mount` builds its DOM in the
// section it is given and subscribes to the cockpit's events (`cockpit.on(name, fn)`: "runs", "run",
// "node", "device", "select"). Add a panel by importing it in main.js and listing it in PANELS there.

/** Mount every panel into `container`, in order. */
export function mountPanels(container, panels, cockpit) {
  for (const panel of panels) {
    const section = document.createElement("section");
    section.className = "holo";
    section.id = `panel-${panel.id}`;
    section.setAttribute("aria-label", panel.title);
    const heading = document.createElement("h2");
    heading.textContent = panel.title;
    section.append(heading);
    container.append(section);
    panel.mount(section, cockpit);
  }
}

/** A small element builder: el("li", {className: "x", dataset: {runId}}, child, "text"). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}
