/* camonnx report: the layer slider, method and normalisation switches, arrow keys, and curve
   points that move the slider. No framework; reads the JSON embedded in the page
   (#report-data: views[{id, label, method, folder, layers, classes, frames[n][norm][l]}],
   norm, indices {layer name: model index}). */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var views = data.views;
  var slider = document.getElementById("layer");
  if (!views.length || !slider) {
    return;
  }
  var output = document.getElementById("layer-out");
  var select = document.getElementById("method");
  var state = {view: 0, norm: data.norm, layer: views[0].layers.length - 1};
  var points = Array.prototype.slice.call(document.querySelectorAll("circle.pt[data-layer]"));
  var taps = Array.prototype.slice.call(document.querySelectorAll("tr[data-layer]"));

  function current() {
    return views[state.view];
  }

  function caption(view, n, k) {
    var name = view.layers[k];
    var index = Object.prototype.hasOwnProperty.call(data.indices, name) ? " · #" + data.indices[name] : "";
    return {layer: name, pos: "layer " + (k + 1) + " / " + view.layers.length + index,
            method: view.label, norm: state.norm, "class": view.classes[n] || ""};
  }

  function render() {
    var view = current(), k = state.layer, name = view.layers[k];
    slider.max = String(view.layers.length - 1);
    slider.value = String(k);
    slider.setAttribute("aria-valuetext", name + " (layer " + (k + 1) + " of " + view.layers.length + ")");
    output.textContent = (k + 1) + " / " + view.layers.length;
    document.querySelectorAll("figure.frame").forEach(function (figure) {
      var n = Number(figure.getAttribute("data-image"));
      if (n >= view.frames.length) {
        figure.hidden = true;
        return;
      }
      figure.hidden = false;
      var parts = caption(view, n, k);
      var img = figure.querySelector("img");
      img.src = view.frames[n][state.norm][k];
      img.alt = parts.method + " map of image " + (n + 1) + " (" + parts["class"] + ") at " +
        parts.pos + ", " + parts.layer + ", " + parts.norm + " normalisation, over the image";
      Object.keys(parts).forEach(function (key) {
        var span = figure.querySelector(".c-" + key);
        if (span) {
          span.textContent = parts[key];
        }
      });
    });
    points.forEach(function (point) {
      point.classList.toggle("current", point.getAttribute("data-layer") === name);
    });
    taps.forEach(function (row) {
      row.classList.toggle("current", row.getAttribute("data-layer") === name);
    });
  }

  function setLayer(k) {
    state.layer = Math.max(0, Math.min(current().layers.length - 1, k));
    render();
  }

  function setView(i) {
    var name = current().layers[state.layer];
    state.view = i;
    var j = current().layers.indexOf(name);
    state.layer = j >= 0 ? j : Math.min(state.layer, current().layers.length - 1);
    if (select) {
      select.value = current().id;
    }
    render();
  }

  /* A curve point: its method's view (the current one if it matches), then its layer by name,
     else the layer whose model index is nearest. */
  function goTo(point) {
    var method = point.getAttribute("data-method"), name = point.getAttribute("data-layer");
    var x = Number(point.getAttribute("data-x"));
    var i = state.view;
    if (current().method !== method) {
      for (var v = 0; v < views.length; v++) {
        if (views[v].method === method) {
          i = v;
          break;
        }
      }
    }
    var view = views[i], k = view.layers.indexOf(name);
    if (k < 0) {
      var best = Infinity;
      view.layers.forEach(function (layer, j) {
        var d = Math.abs((data.indices[layer] !== undefined ? data.indices[layer] : j) - x);
        if (d < best) {
          best = d;
          k = j;
        }
      });
    }
    if (i !== state.view) {
      setView(i);
    }
    setLayer(k);
    var figure = document.getElementById("figure-0");
    if (figure && figure.scrollIntoView) {
      figure.scrollIntoView({block: "nearest"});
    }
  }

  slider.addEventListener("input", function () {
    setLayer(Number(slider.value));
  });
  document.getElementById("prev").addEventListener("click", function () {
    setLayer(state.layer - 1);
  });
  document.getElementById("next").addEventListener("click", function () {
    setLayer(state.layer + 1);
  });
  document.querySelectorAll('input[name="norm"]').forEach(function (radio) {
    radio.addEventListener("change", function () {
      if (radio.checked) {
        state.norm = radio.value;
        render();
      }
    });
  });
  if (select) {
    select.addEventListener("change", function () {
      for (var v = 0; v < views.length; v++) {
        if (views[v].id === select.value) {
          setView(v);
        }
      }
    });
  }
  document.addEventListener("keydown", function (event) {
    var tag = event.target && event.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || event.altKey ||
        event.ctrlKey || event.metaKey) {
      return; /* the slider, radios and select handle their own keys */
    }
    var steps = {ArrowLeft: -1, ArrowRight: 1};
    if (event.key in steps) {
      setLayer(state.layer + steps[event.key]);
    } else if (event.key === "Home") {
      setLayer(0);
    } else if (event.key === "End") {
      setLayer(current().layers.length - 1);
    } else {
      return;
    }
    event.preventDefault();
  });
  points.forEach(function (point) {
    point.addEventListener("click", function () {
      goTo(point);
    });
    point.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        goTo(point);
      }
    });
  });
  render();
}());
