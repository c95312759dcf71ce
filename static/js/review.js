// Keyboard-first reviewing: shortcuts, draft autosave, line comments, pairwise keys.
// Loaded with a CSP nonce; no inline handlers. The pages work without it (plain forms and links).
(function () {
  "use strict";

  const typing = (el) =>
    el && (el.tagName === "TEXTAREA" || el.isContentEditable ||
      (el.tagName === "INPUT" && !["radio", "checkbox"].includes(el.type)) || el.tagName === "SELECT");

  // --- shortcuts overlay ---------------------------------------------------------------------
  // Opened as a dialog (static/js/app.js): it takes focus, and Esc or its button closes it.
  const overlay = document.getElementById("shortcuts");
  function toggleOverlay(show) {
    if (!overlay) return;
    if (show) window.Mergeable.openDialog(overlay); else window.Mergeable.closeDialog(overlay);
  }
  const helpButton = document.getElementById("show-shortcuts");
  if (helpButton) helpButton.addEventListener("click", () => toggleOverlay(overlay.classList.contains("hidden")));

  // --- files ----------------------------------------------------------------------------------
  const files = () => Array.from(document.querySelectorAll(".review-main section.diff[id^='file-']"));
  let currentFile = -1;
  function gotoFile(step) {
    const list = files();
    if (!list.length) return;
    currentFile = Math.max(0, Math.min(list.length - 1, currentFile + step));
    list.forEach((el, i) => el.classList.toggle("current", i === currentFile));
    list[currentFile].scrollIntoView({ block: "start" });
  }

  // --- the review form ------------------------------------------------------------------------
  const form = document.getElementById("review-form");
  const voteForm = document.getElementById("vote-form");
  const started = Date.now();
  const timeInput = document.getElementById("time-spent");
  const baseTime = timeInput ? parseInt(timeInput.value || "0", 10) : 0;
  const commentsInput = document.getElementById("line-comments");
  let comments = [];
  try { comments = commentsInput ? JSON.parse(commentsInput.value || "[]") : []; } catch (e) { comments = []; }

  function updateTime() {
    if (timeInput) timeInput.value = String(baseTime + Math.round((Date.now() - started) / 1000));
  }

  let dirty = false;
  // Autosaves still on their way: submitting waits for them, so that a draft request the server
  // handles after the submit cannot overwrite the submitted review with a stale draft.
  const pending = new Set();
  let submitting = false;
  function saveDraft() {
    if (!form || form.dataset.autosave !== "on" || submitting) return Promise.resolve();
    updateTime();
    const status = document.getElementById("draft-status");
    const saving = fetch(form.dataset.draftUrl, {
      method: "POST",
      body: new FormData(form),
      headers: { "X-Mergeable-Autosave": "1" },
      credentials: "same-origin",
    }).then((r) => {
      if (r.ok) { dirty = false; if (status) status.textContent = "Draft saved " + new Date().toLocaleTimeString() + "."; }
      else if (status) status.textContent = "Draft not saved (" + r.status + ").";
    }).catch(() => { if (status) status.textContent = "Draft not saved: offline?"; })
      .finally(() => pending.delete(saving));
    pending.add(saving);
    return saving;
  }
  if (form) {
    form.addEventListener("change", () => { dirty = true; saveDraft(); });
    // Fields that live elsewhere on the page (the acceptance checklist) but belong to the form.
    document.addEventListener("change", (event) => {
      if (event.target.form === form && !form.contains(event.target)) { dirty = true; saveDraft(); }
    });
    form.addEventListener("input", () => { dirty = true; });
    setInterval(() => { if (dirty) saveDraft(); }, 5000);
    form.addEventListener("submit", (event) => {
      submitting = true;
      updateTime();
      if (!pending.size) return;
      event.preventDefault();
      const submitter = event.submitter;
      Promise.allSettled(Array.from(pending)).then(() => form.requestSubmit(submitter));
    });
  }

  // --- rubric answering ------------------------------------------------------------------------
  const criteria = () => Array.from(document.querySelectorAll("#review-form fieldset.criterion"));
  function focusedCriterion() {
    const active = document.activeElement;
    const inside = active && active.closest ? active.closest("fieldset.criterion") : null;
    if (inside) return inside;
    return criteria().find((fs) => !fs.querySelector("input:checked")) || null;
  }
  function answer(fieldset, index) {
    const radios = Array.from(fieldset.querySelectorAll("input[type=radio]"));
    const radio = radios[index];
    if (!radio) return false;
    radio.checked = true;
    radio.dispatchEvent(new Event("change", { bubbles: true }));
    const next = criteria().find((fs) => !fs.querySelector("input:checked"));
    const target = next ? next.querySelector("input[type=radio]") : document.getElementById("notes");
    if (target) target.focus();
    return true;
  }
  function answerValue(fieldset, value) {
    const radios = Array.from(fieldset.querySelectorAll("input[type=radio]"));
    const index = radios.findIndex((r) => r.value === value);
    return index >= 0 && answer(fieldset, index);
  }
  function setVerdict(value) {
    const fs = document.querySelector("#review-form fieldset.verdict");
    if (fs) answerValue(fs, value);
  }

  // --- line comments ----------------------------------------------------------------------------
  // A line number is focusable: Enter or c on it opens a box under the line (Ctrl+Enter adds,
  // Esc closes), ↑/↓ move between line numbers. Each comment shows under its line and in the list
  // beside the rubric, with a Remove button until the review is submitted.
  const editable = Boolean(form && form.dataset.autosave === "on");
  const lineCells = ".difftable.commentable td.no[data-line]";

  // A path as the page shows it: invisible characters as marks (rendered by the server, which
  // owns that rule), while the comment itself keeps the exact path.
  function pathLabel(path) {
    for (const section of document.querySelectorAll("section.diff[data-path]")) {
      if (section.dataset.path === path) return section.dataset.pathLabel || path;
    }
    return path;
  }
  function removeComment(comment) {
    const index = comments.indexOf(comment);
    if (index >= 0) comments.splice(index, 1);
    storeComments(); dirty = true; saveDraft();
  }
  function showComments() {
    document.querySelectorAll("tr.line-comment.mine").forEach((row) => row.remove());
    const list = document.getElementById("comment-list");
    if (list) list.replaceChildren();
    if (list && !comments.length) {
      const li = document.createElement("li"); li.className = "empty"; li.textContent = "None yet."; list.append(li);
    }
    comments.forEach((c) => {
      const onRemove = editable ? () => removeComment(c) : null;
      window.Mergeable.placeLineComment(c, { mine: true, onRemove: onRemove });
      if (!list) return;
      const li = document.createElement("li");
      const code = document.createElement("code"); code.textContent = pathLabel(c.path) + ":" + c.line;
      li.append(code, " (" + c.side + ") " + c.text + " ");
      if (onRemove) {
        const remove = document.createElement("button");
        remove.type = "button"; remove.className = "linkbutton-dark"; remove.textContent = "remove";
        remove.setAttribute("aria-label", "Remove the comment on " + pathLabel(c.path) + ":" + c.line);
        remove.addEventListener("click", onRemove);
        li.append(remove);
      }
      list.append(li);
    });
  }
  function storeComments() {
    if (commentsInput) commentsInput.value = JSON.stringify(comments);
    showComments();
  }
  function makeFocusable() {
    if (!editable) return;
    document.querySelectorAll(lineCells).forEach((cell) => {
      if (cell.dataset.line && !cell.hasAttribute("tabindex")) {
        cell.tabIndex = 0;
        cell.title = "Line " + cell.dataset.line + " (" + cell.dataset.side + "): Enter or c to comment";
      }
    });
  }
  function openCommentBox(cell) {
    const section = cell.closest("section.diff");
    let row = cell.closest("tr");
    while (row.nextElementSibling && row.nextElementSibling.classList.contains("line-comment")) {
      if (row.nextElementSibling.classList.contains("editing")) {
        row.nextElementSibling.querySelector("textarea").focus();
        return;
      }
      row = row.nextElementSibling;
    }
    const box = document.createElement("tr");
    box.className = "line-comment editing";
    const td = document.createElement("td");
    td.colSpan = cell.closest("tr").children.length;
    const area = document.createElement("textarea");
    const label = "Comment on line " + cell.dataset.line + " (" + cell.dataset.side + ")";
    area.placeholder = label + ". Ctrl+Enter adds it, Esc closes.";
    area.setAttribute("aria-label", label);
    const save = document.createElement("button"); save.type = "button"; save.textContent = "Add comment";
    const cancel = document.createElement("button"); cancel.type = "button"; cancel.textContent = "Cancel";
    const close = () => { box.remove(); cell.focus(); };
    save.addEventListener("click", () => {
      const text = area.value.trim();
      box.remove();
      if (text) {
        comments.push({ path: section.dataset.path, line: parseInt(cell.dataset.line, 10), side: cell.dataset.side, text: text });
        storeComments(); dirty = true; saveDraft();
      }
      cell.focus();
    });
    cancel.addEventListener("click", close);
    area.addEventListener("keydown", (event) => {
      if ((event.ctrlKey || event.metaKey) && event.key === "Enter") { event.preventDefault(); event.stopPropagation(); save.click(); }
      else if (event.key === "Escape") { event.preventDefault(); event.stopPropagation(); close(); }
    });
    td.append(area, save, " ", cancel);
    box.append(td);
    row.after(box);
    area.focus();
  }
  function moveLine(cell, step) {
    const table = cell.closest("table");
    const cells = Array.from(table.querySelectorAll('td.no[data-side="' + cell.dataset.side + '"][tabindex]'));
    const next = cells[cells.indexOf(cell) + step];
    if (next) next.focus();
  }
  if (editable) {
    document.addEventListener("click", (event) => {
      const cell = event.target.closest ? event.target.closest(lineCells) : null;
      if (cell && cell.dataset.line) openCommentBox(cell);
    });
    document.addEventListener("keydown", (event) => {
      const cell = event.target.closest ? event.target.closest(lineCells) : null;
      if (!cell || !cell.dataset.line || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "Enter" || event.key === "c") openCommentBox(cell);
      else if (event.key === "ArrowDown") moveLine(cell, 1);
      else if (event.key === "ArrowUp") moveLine(cell, -1);
      else return;
      event.preventDefault();
      event.stopImmediatePropagation();
    }, true);
    document.addEventListener("htmx:load", makeFocusable);
  }
  document.addEventListener("DOMContentLoaded", () => { makeFocusable(); if (form) showComments(); });

  // --- keys ---------------------------------------------------------------------------------------
  function followView(id) {
    const link = document.getElementById(id);
    if (!link) return;
    (dirty ? saveDraft() : Promise.resolve()).finally(() => { window.location.href = link.href; });
  }

  document.addEventListener("keydown", (event) => {
    // Submit (or vote); once submitted, go on to the next run (or pair).
    const submit = document.querySelector("[data-ctrl-enter]");
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter" && submit) {
      event.preventDefault();
      updateTime();
      submit.click();
      return;
    }
    if (event.key === "Escape") { toggleOverlay(false); return; }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (event.key === "?") { toggleOverlay(overlay && overlay.classList.contains("hidden")); return; }

    if (voteForm) {
      const choice = { a: "left", b: "right", t: "tie", x: "both_bad" }[event.key];
      if (choice) {
        const radio = voteForm.querySelector("input[name=choice][value=" + choice + "]");
        if (radio) { radio.checked = true; if (submit) submit.focus(); event.preventDefault(); }
      }
      return;
    }
    if (!form) return;
    if (event.shiftKey && ["Y", "S", "N"].includes(event.key)) {
      setVerdict({ Y: "yes", S: "small_changes", N: "no" }[event.key]);
      event.preventDefault();
      return;
    }
    const fieldset = focusedCriterion();
    const inCriterion = document.activeElement && document.activeElement.closest &&
      document.activeElement.closest("fieldset.criterion");
    if (/^[1-9]$/.test(event.key) && fieldset) {
      if (answer(fieldset, parseInt(event.key, 10) - 1)) event.preventDefault();
      return;
    }
    if ((event.key === "y" || (event.key === "n" && inCriterion)) && fieldset) {
      if (answerValue(fieldset, event.key === "y" ? "yes" : "no")) { event.preventDefault(); return; }
    }
    switch (event.key) {
      case "j": case "n": gotoFile(1); break;
      case "k": case "p": gotoFile(-1); break;
      case "s": followView("view-split"); break;
      case "u": followView("view-unified"); break;
      default: return;
    }
    event.preventDefault();
  });
})();
