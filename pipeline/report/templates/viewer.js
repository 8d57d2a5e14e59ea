// Slice viewer of a subject page: one per output, every slice of three planes, panels kept in sync.
// Reads each .viewer's data-geom (written by the report from evaluation's summary.json); loads nothing else.
(function () {
  "use strict";
  const STEPS = {ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10};

  function setup(viewer) {
    const geom = JSON.parse(viewer.dataset.geom);
    const slider = viewer.querySelector("input.slider");
    const pos = viewer.querySelector(".pos");
    const figures = Array.from(viewer.querySelectorAll(".vpanel"));
    const state = {plane: "axial", index: Object.assign({}, geom.start)};

    function draw() {
      const g = geom.planes[state.plane];
      const i = state.index[state.plane];
      const pw = Math.max(1, Math.floor(figures[0].querySelector(".vp").clientWidth));
      const th = Math.max(1, Math.round(g.height * g.aspect * pw / g.width));
      const col = i % g.columns, row = Math.floor(i / g.columns), rows = Math.ceil(g.n / g.columns);
      figures.forEach(function (fig, k) {
        const vp = fig.querySelector(".vp"), img = vp.querySelector("img");
        const src = geom.panels[k].sprites[state.plane];
        if (img.getAttribute("src") !== src) img.setAttribute("src", src);
        vp.style.height = th + "px";
        img.style.width = (g.columns * pw) + "px";
        img.style.height = (rows * th) + "px";
        img.style.transform = "translate(" + (-col * pw) + "px, " + (-row * th) + "px)";
        fig.dataset.plane = state.plane;
        fig.dataset.slice = String(i);
      });
      slider.max = String(g.n - 1);
      slider.value = String(i);
      const mm = g.first_mm + i * g.step_mm;
      pos.textContent = state.plane + " slice " + (i + 1) + " / " + g.n + " · " + g.axis + " = " + mm.toFixed(1) + " mm";
    }

    function go(i) {
      const g = geom.planes[state.plane];
      state.index[state.plane] = Math.max(0, Math.min(g.n - 1, i));
      draw();
    }

    slider.addEventListener("input", function () { go(Number(slider.value)); });
    viewer.querySelectorAll("input[type=radio]").forEach(function (radio) {
      radio.addEventListener("change", function () {
        if (radio.checked) { state.plane = radio.value; draw(); }
      });
    });
    viewer.querySelector(".panels").addEventListener("wheel", function (e) {
      e.preventDefault();
      go(state.index[state.plane] + (e.deltaY > 0 ? 1 : -1));
    }, {passive: false});
    viewer.addEventListener("keydown", function (e) {
      if (e.target.tagName === "INPUT") return;  // the slider and the plane buttons have their own keys
      const g = geom.planes[state.plane];
      if (e.key in STEPS) go(state.index[state.plane] + STEPS[e.key]);
      else if (e.key === "Home") go(0);
      else if (e.key === "End") go(g.n - 1);
      else return;
      e.preventDefault();
    });
    window.addEventListener("resize", draw);
    draw();
    viewer.classList.add("ready");
  }

  document.querySelectorAll(".viewer").forEach(setup);
})();
