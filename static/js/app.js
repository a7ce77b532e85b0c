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
  // "Go back" on an error page; without history (a new tab) the link's own href is followed
  var back = target.closest("a[data-history-back]");
  if (back && window.history.length > 1) {
    event.preventDefault();
    window.history.back();
  }
});
