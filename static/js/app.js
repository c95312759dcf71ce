// Small behaviours htmx cannot do. Loaded with a CSP nonce; no inline handlers anywhere.
// Confirmations are htmx's own (hx-confirm on boosted forms), so nothing here asks.
(function () {
  "use strict";

  // --- line comments shown under their line -----------------------------------------------------
  // A comment is {path, line, side, text} (scoring.reviews checks the shape); the diff's sections
  // carry data-path and its line-number cells data-side / data-line (templates/scoring/_diff*.html).
  function diffSection(path) {
    for (const section of document.querySelectorAll("section.diff[data-path]")) {
      // The reference patch and the pairwise panes are other diffs of the same paths.
      if (section.dataset.path === path && !/^(ref-|l-|r-)/.test(section.id)) return section;
    }
    return null;
  }

  // Put `comment` in a row under its line; false when the line is not on the page (a collapsed
  // file or a folded range), in which case the list beside the diff is where it shows.
  // options: {reviewer: name shown before the text, onRemove: adds a "Remove" button, mine: bool}
  function placeLineComment(comment, options) {
    const opts = options || {};
    const section = diffSection(comment.path);
    if (!section) return false;
    const cell = section.querySelector(
      'td.no[data-side="' + comment.side + '"][data-line="' + Number(comment.line) + '"]');
    if (!cell) return false;
    let after = cell.closest("tr");
    while (after.nextElementSibling && after.nextElementSibling.classList.contains("line-comment")) {
      after = after.nextElementSibling;
    }
    const row = document.createElement("tr");
    row.className = "line-comment saved" + (opts.mine ? " mine" : "");
    const td = document.createElement("td");
    td.colSpan = cell.closest("tr").children.length;
    if (opts.reviewer) {
      const who = document.createElement("strong");
      who.textContent = opts.reviewer + ": ";
      td.append(who);
    }
    const text = document.createElement("span");
    text.className = "comment-text";
    text.textContent = comment.text;
    td.append(text);
    if (opts.onRemove) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove-comment";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove the comment on line " + comment.line);
      remove.addEventListener("click", opts.onRemove);
      td.append(" ", remove);
    }
    row.append(td);
    after.after(row);
    return true;
  }

  // Comments the page hands over read-only: the lead's run page (every reviewer's) and a review
  // page once its reviewer has submitted (the other reviewers').
  function showReadOnlyComments() {
    for (const id of ["judgement-comments", "others-comments"]) {
      const data = document.getElementById(id);
      if (!data || data.dataset.placed) continue;
      data.dataset.placed = "1";
      let comments = [];
      try { comments = JSON.parse(data.dataset.comments || "[]"); } catch (e) { comments = []; }
      comments.forEach((c) => placeLineComment(c, { reviewer: c.reviewer }));
    }
  }

  window.Mergeable = { placeLineComment: placeLineComment };
  document.addEventListener("DOMContentLoaded", showReadOnlyComments);
  // htmx:load fires on content htmx adds (an outerHTML swap settles on the detached old element).
  document.addEventListener("htmx:load", showReadOnlyComments);

  // --- confirmations ------------------------------------------------------------------------------
  // hx-confirm asks before every boosted submit; a checkbox marked data-confirm-when-checked asks
  // only when it is ticked (removing a stored key), through the same htmx event.
  document.addEventListener("htmx:confirm", (event) => {
    const form = event.detail.elt.closest ? event.detail.elt.closest("form") : null;
    const ticked = form ? form.querySelector("[data-confirm-when-checked]:checked") : null;
    if (!ticked) return;
    event.preventDefault();
    if (window.confirm(ticked.dataset.confirmWhenChecked)) event.detail.issueRequest(true);
  });

  // --- dialogs: the shortcuts overlay takes focus and gives it back --------------------------------
  let opener = null;
  function openDialog(dialog) {
    opener = document.activeElement;
    dialog.classList.remove("hidden");
    const first = dialog.querySelector("button, [href], [tabindex]");
    (first || dialog).focus();
  }
  function closeDialog(dialog) {
    if (dialog.classList.contains("hidden")) return;
    dialog.classList.add("hidden");
    if (opener && opener.focus) opener.focus();
    opener = null;
  }
  window.Mergeable.openDialog = openDialog;
  window.Mergeable.closeDialog = closeDialog;
  document.addEventListener("click", (event) => {
    const close = event.target.closest ? event.target.closest("[data-close-dialog]") : null;
    if (close) closeDialog(close.closest("[role=dialog]"));
  });
})();
