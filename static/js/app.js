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
