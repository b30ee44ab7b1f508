// Policy simulator: choosing a resource sets the action to what opening it from My apps asks
// (an SSH/VNC/RDP resource opens a desktop session; a web app gets an HTTP request), so the
// first answer is about the resource, not about a pathway it never offers. The admin can
// still change the action afterwards.
"use strict";
(() => {
  const resource = document.getElementById("id_resource");
  const action = document.getElementById("id_action_kind");
  const actionClass = document.getElementById("id_action_class");
  const table = document.getElementById("resource-actions");
  if (!resource || !action || !actionClass || !table) return;
  const defaults = new Map([...table.querySelectorAll("span[data-slug]")].map(
    (span) => [span.dataset.slug, { action: span.dataset.action, actionClass: span.dataset.class }]));
  resource.addEventListener("change", () => {
    const chosen = defaults.get(resource.value);
    if (!chosen) return;
    action.value = chosen.action;
    actionClass.value = chosen.actionClass;
  });
})();
