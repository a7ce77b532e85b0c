/* Voluble's own page behaviour. The CSP allows scripts from this origin only: no inline scripts, no
   on*= attributes, no javascript: links. Listeners are delegated to the document, so they keep
   working on content htmx swaps in. */
"use strict";
document.addEventListener("click", function (event) {
  var target = event.target;
  if (!(target instanceof Element)) {
    return;
  }
  // a secret shown once: one click selects it for copying
  var field = target.closest("input[data-select-on-click]");
  if (field) {
    field.select();
    return;
  }
  // a value to paste elsewhere (a hook URL, a link): the button copies its field
  var copy = target.closest("button[data-copy]");
  if (copy) {
    var source = document.querySelector(copy.getAttribute("data-copy"));
    if (source && "value" in source) {
      source.select();
      var done = function () {
        copy.textContent = "Copied";
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(source.value).then(done, function () {});
      } else if (document.execCommand && document.execCommand("copy")) {
        done();
      }
    }
    return;
  }
  // "Go back" on an error page; without history (a new tab) the link's own href is followed
  var back = target.closest("a[data-history-back]");
  if (back && window.history.length > 1) {
    event.preventDefault();
    window.history.back();
  }
});

/* A conversation thread stays scrolled to its newest message (at the bottom) when it is opened and when
   it updates itself, unless the reader scrolled up to read older messages: then it stays where it was. */
(function () {
  var stuck = true;
  var saved = 0;
  function thread() {
    return document.querySelector("#conversation [data-thread]");
  }
  function place() {
    var list = thread();
    if (list) {
      list.scrollTop = stuck ? list.scrollHeight : saved;
    }
  }
  document.addEventListener("DOMContentLoaded", place);
  document.addEventListener("htmx:beforeSwap", function (event) {
    var list = thread();
    var target = event.detail.target;
    if (list && target && target.id === "conversation") {
      stuck = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
      saved = list.scrollTop;
    } else {
      stuck = true;
    }
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    var elt = event.target;
    if (elt instanceof Element && (elt.id === "conversation" || elt.querySelector("#conversation"))) {
      place();
    }
  });
  // after a reply went through (not refused: that answer is retargeted to the messages), the reply box
  // is emptied for the next one (its new key came with the answer)
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (form instanceof HTMLFormElement && form.hasAttribute("data-reset-on-success") && event.detail.successful &&
        !event.detail.xhr.getResponseHeader("HX-Retarget")) {
      var text = form.querySelector("textarea");
      if (text) {
        text.value = "";
      }
    }
  });
})();

/* Live fragments (decision 0028): a polling fragment carries the ETag of what it shows in data-etag; it is
   sent back as If-None-Match, and a 304 answer leaves the fragment as it is. */
document.addEventListener("htmx:configRequest", function (event) {
  var elt = event.detail.elt;
  if (elt instanceof Element && elt.hasAttribute("data-etag") && event.detail.verb === "get") {
    event.detail.headers["If-None-Match"] = elt.getAttribute("data-etag");
  }
});
document.addEventListener("htmx:beforeSwap", function (event) {
  if (event.detail.xhr && event.detail.xhr.status === 304) {
    event.detail.shouldSwap = false;
    event.detail.isError = false;
  }
});

/* The dashboard's chart: drawn with uPlot (static/vendor/, loaded on the first page that has a chart) from
   the accessible table next to it, so the table is the one source of the numbers. */
(function () {
  var UPLOT = "/static/vendor/uplot-1.6.32/";
  var COLORS = {
    MSG_PENDING: "#9ca3af", MSG_SENDING: "#f59e0b", MSG_SENT: "#3b82f6", MSG_DELIVERED_SERVICE: "#06b6d4",
    MSG_DELIVERED_USER: "#10b981", MSG_READ: "#059669", MSG_REPLIED: "#8b5cf6", MSG_FAILED: "#ef4444",
    MSG_RECEIVED: "#6b7280"
  };
  var loading = null;
  function load() {
    if (window.uPlot) {
      return Promise.resolve(window.uPlot);
    }
    if (!loading) {
      loading = new Promise(function (resolve, reject) {
        var css = document.createElement("link");
        css.rel = "stylesheet";
        css.href = UPLOT + "uPlot.min.css";
        document.head.appendChild(css);
        var js = document.createElement("script");
        js.src = UPLOT + "uPlot.iife.min.js";
        js.onload = function () { resolve(window.uPlot); };
        js.onerror = reject;
        document.head.appendChild(js);
      });
    }
    return loading;
  }
  function read(table) {
    var heads = Array.prototype.slice.call(table.querySelectorAll("thead th[data-state]"));
    var states = heads.map(function (th) { return th.getAttribute("data-state"); });
    var labels = heads.map(function (th) { return th.textContent; });
    var xs = [];
    var ys = states.map(function () { return []; });
    table.querySelectorAll("tbody tr[data-day]").forEach(function (row) {
      xs.push(Date.parse(row.getAttribute("data-day") + "T00:00:00Z") / 1000);
      states.forEach(function (state, i) {
        var cell = row.querySelector('td[data-state="' + state + '"]');
        ys[i].push(cell ? Number(cell.textContent) : 0);
      });
    });
    return { states: states, labels: labels, data: [xs].concat(ys) };
  }
  function draw(figure) {
    var table = figure.querySelector("[data-chart-table]");
    var canvas = figure.querySelector("[data-chart-canvas]");
    if (!table || !canvas || canvas.hasAttribute("data-drawn")) {
      return;
    }
    var found = read(table);
    canvas.setAttribute("data-drawn", "true");
    load().then(function (uPlot) {
      var series = [{}].concat(found.states.map(function (state, i) {
        return {
          label: found.labels[i], stroke: COLORS[state] || "#111827", width: 2,
          points: { show: true, size: 6 }
        };
      }));
      new uPlot({
        width: Math.max(280, canvas.clientWidth || figure.clientWidth || 600),
        height: 240,
        series: series,
        scales: { x: { time: true } },
        axes: [{}, { label: "messages" }]
      }, found.data, canvas);
    });
  }
  function drawAll(root) {
    if (root && root.querySelectorAll) {
      root.querySelectorAll('[data-chart="messages-per-day"]').forEach(draw);
    }
  }
  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:load", function (event) { drawAll(event.target); });
})();
