// The SSH transcript on a desktop session page: show only the lines that contain the search.
const input = document.getElementById("typescript-search");
const count = document.getElementById("typescript-count");
const lines = [...document.querySelectorAll("#typescript .line")];

input.addEventListener("input", () => {
  const wanted = input.value.trim().toLowerCase();
  let shown = 0;
  for (const line of lines) {
    const match = !wanted || line.textContent.toLowerCase().includes(wanted);
    line.hidden = !match;
    if (match) shown++;
  }
  count.textContent = wanted ? `${shown} of ${lines.length} lines` : "";
});
