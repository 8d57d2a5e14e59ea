// Blinded reader study: 1-5 ratings of both sides and a preference per pair, saved only as a downloaded
// JSON file (a Blob link). Nothing is sent anywhere; the page knows pair ids, never which side is which.
(function () {
  "use strict";
  const root = document.getElementById("reader");
  const pairs = Array.from(document.querySelectorAll(".pair"));
  const progress = document.getElementById("progress");
  const save = document.getElementById("save");
  const link = document.getElementById("download");

  function checked(name) {
    const el = document.querySelector("input[name='" + name + "']:checked");
    return el ? el.value : null;
  }

  function collect() {
    return pairs.map(function (p) {
      const id = p.dataset.pair;
      const left = checked(id + "-left"), right = checked(id + "-right");
      return {pair: id, left: left === null ? null : Number(left), right: right === null ? null : Number(right),
              preference: checked(id + "-pref")};
    });
  }

  function update() {
    const ratings = collect();
    let done = 0;
    ratings.forEach(function (r, k) {
      const complete = r.left !== null && r.right !== null && r.preference !== null;
      pairs[k].classList.toggle("done", complete);
      if (complete) done += 1;
    });
    progress.textContent = done + " of " + pairs.length + " pairs complete";
    return ratings;
  }

  document.addEventListener("change", update);
  save.addEventListener("click", function () {
    const reader = document.getElementById("reader-name").value.trim();
    const data = {format: root.dataset.format, study: root.dataset.study, reader: reader,
                  saved: new Date().toISOString(), ratings: update()};
    const blob = new Blob([JSON.stringify(data, null, 2) + "\n"], {type: "application/json"});
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.download = "ratings-" + root.dataset.study + "-" + (reader.replace(/[^A-Za-z0-9_-]+/g, "_") || "reader") + ".json";
    link.hidden = false;
    link.textContent = "ratings file (" + data.ratings.length + " pairs) - click if the download did not start";
    link.click();
  });
  update();
})();
