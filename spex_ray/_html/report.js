/* The spex-ray report page: the recurring-interaction table and the examples, paginated.
 * Reads the compact JSON in <script id="spx-data"> (built by pipelines/report.py):
 *   {examples: [view, ...] (see view.js), scale: |effect| in full colour on the dataset scale,
 *    top: interactions kept per example, page: examples per page,
 *    recurring: [[label, examples, mean effect, positive, negative, total |effect|, [example positions],
 *                 [where the term is in each of those examples' x]], ...]}
 * Only the examples of the current page are drawn, so the page stays quick at 10,000 examples.
 * The filter is kept in the address (#id=...), so a link can point at an example.
 */
(function () {
  "use strict";
  var V = window.SpexView, el = V.el;
  var data = JSON.parse(document.getElementById("spx-data").textContent);
  var examples = data.examples, pageSize = data.page || 20;
  var lowerIds = examples.map(function (ex) { return ex.id.toLowerCase(); });
  var state = {query: "", sort: "id", scale: "example", status: "all", page: 0, only: null};
  var $ = function (id) { return document.getElementById(id); };

  var SORTS = {
    id: null,
    r2up: function (a, b) { return r2(a) - r2(b); },
    r2down: function (a, b) { return r2(b) - r2(a); },
    change: function (a, b) { return change(b) - change(a); }
  };
  function r2(i) { var v = examples[i].r2; return v === undefined || v === null ? Infinity : v; }
  function change(i) {
    var ex = examples[i];
    return ex.f === undefined || ex.z === undefined ? -Infinity : Math.abs(ex.f - ex.z);
  }

  /* The examples of the picked recurring interaction: position -> where the term is in its list. */
  var markCache = {row: null, map: null};
  function marks() {
    if (markCache.row !== state.only) {
      var row = data.recurring[state.only], map = new Map();
      row[6].forEach(function (position, k) { map.set(position, row[7][k]); });
      markCache = {row: state.only, map: map};
    }
    return markCache.map;
  }

  function matching() {
    var q = state.query.trim().toLowerCase(), out = [];
    var allowed = state.only === null ? null : marks();
    for (var i = 0; i < examples.length; i++) {
      if (q && lowerIds[i].indexOf(q) < 0) continue;
      if (allowed && !allowed.has(i)) continue;
      if (state.status === "ok" && examples[i].err !== undefined) continue;
      if (state.status === "error" && examples[i].err === undefined) continue;
      out.push(i);
    }
    var sort = SORTS[state.sort];
    if (sort) out.sort(function (a, b) { return sort(a, b) || a - b; });
    return out;
  }

  function renderExamples() {
    var list = matching(), pages = Math.max(1, Math.ceil(list.length / pageSize));
    state.page = Math.min(state.page, pages - 1);
    var first = state.page * pageSize, shown = list.slice(first, first + pageSize);
    var box = $("spx-examples");
    box.textContent = "";
    var picked = state.only === null ? null : marks();
    shown.forEach(function (i) {
      var opts = {scale: state.scale === "dataset" ? data.scale : null, mark: picked ? picked.get(i) : null};
      box.appendChild(V.card(examples[i], opts));
    });
    if (!shown.length) box.appendChild(el("div", "spx-none", "No example matches the filter."));
    var text = list.length ? (first + 1) + "\u2013" + (first + shown.length) + " of " + list.length.toLocaleString("en-US") +
      (list.length === examples.length ? " examples" : " matching examples") : "0 examples";
    document.querySelectorAll(".spx-count").forEach(function (node) { node.textContent = text; });
    document.querySelectorAll(".spx-pageno").forEach(function (node) {
      node.textContent = "page " + (state.page + 1) + " of " + pages;
    });
    document.querySelectorAll(".spx-prev").forEach(function (b) { b.disabled = state.page === 0; });
    document.querySelectorAll(".spx-next").forEach(function (b) { b.disabled = state.page >= pages - 1; });
    var chip = $("spx-only");
    chip.hidden = state.only === null;
    if (state.only !== null) $("spx-only-label").textContent = data.recurring[state.only][0];
    var hash = state.query ? "#id=" + encodeURIComponent(state.query) : "";
    if (location.hash !== hash) {
      try { history.replaceState(null, "", hash || location.pathname + location.search); } catch (err) { /* opaque origin */ }
    }
  }

  var recurringSort = {column: 5, down: true};
  function renderRecurring() {
    var box = $("spx-recurring"), rows = data.recurring;
    box.textContent = "";
    if (!rows.length) {
      box.appendChild(el("div", "spx-none", "No interaction is among the strongest of two or more examples."));
      return;
    }
    var find = $("spx-find").value.trim().toLowerCase();
    var order = rows.map(function (_, i) { return i; }).filter(function (i) {
      return !find || rows[i][0].toLowerCase().indexOf(find) >= 0;
    });
    var c = recurringSort.column, sign = recurringSort.down ? -1 : 1;
    order.sort(function (a, b) {
      var x = rows[a][c], y = rows[b][c];
      return (x < y ? -1 : x > y ? 1 : 0) * sign || a - b;
    });
    var scale = 0;
    rows.forEach(function (row) { scale = Math.max(scale, Math.abs(row[2])); });
    var table = el("table", "spx-table"), head = el("tr");
    [["Interaction", 0], ["Examples", 1], ["Mean effect", 2], ["Sign + / \u2212", 3], ["Total |effect|", 5]].forEach(function (h) {
      var th = el("th", h[1] ? "spx-num" : null, h[0]);
      if (h[1] === c) th.className += recurringSort.down ? " spx-down" : " spx-up";
      th.title = "sort";
      th.addEventListener("click", function () {
        recurringSort = {column: h[1], down: h[1] === c ? !recurringSort.down : h[1] !== 0};
        renderRecurring();
      });
      head.appendChild(th);
    });
    var thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var body = el("tbody");
    order.forEach(function (i) {
      var row = rows[i], tr = el("tr");
      if (state.only === i) tr.className = "spx-picked";
      tr.appendChild(el("td", "spx-pair", row[0]));
      tr.appendChild(el("td", "spx-num", row[1].toLocaleString("en-US")));
      var mean = el("td", "spx-num", V.signed(row[2]));
      mean.appendChild(el("span", "spx-dot")).style.background = V.colour(row[2], scale);
      tr.appendChild(mean);
      tr.appendChild(el("td", "spx-num", row[3] + " / " + row[4]));
      tr.appendChild(el("td", "spx-num", V.num(row[5])));
      tr.title = "show the " + row[1] + " examples";
      tr.setAttribute("data-row", String(i));
      tr.addEventListener("click", function () {
        state.only = state.only === i ? null : i;
        state.page = 0;
        markPicked();
        renderExamples();
        if (state.only !== null) $("spx-examples-head").scrollIntoView({behavior: "smooth"});
      });
      body.appendChild(tr);
    });
    table.appendChild(body);
    box.appendChild(table);
    if (!order.length) box.appendChild(el("div", "spx-none", "No interaction contains \u201c" + find + "\u201d."));
  }

  function markPicked() {
    document.querySelectorAll("#spx-recurring tbody tr").forEach(function (tr) {
      tr.classList.toggle("spx-picked", tr.getAttribute("data-row") === String(state.only));
    });
  }

  function bind() {
    var query = $("spx-query");
    var fromHash = /^#id=(.*)$/.exec(location.hash);
    if (fromHash) state.query = query.value = decodeURIComponent(fromHash[1]);
    query.addEventListener("input", function () { state.query = query.value; state.page = 0; renderExamples(); });
    ["sort", "scale", "status"].forEach(function (name) {
      var select = $("spx-" + name);
      select.addEventListener("change", function () { state[name] = select.value; state.page = 0; renderExamples(); });
    });
    document.querySelectorAll(".spx-prev").forEach(function (b) {
      b.addEventListener("click", function () { state.page -= 1; renderExamples(); });
    });
    document.querySelectorAll(".spx-next").forEach(function (b) {
      b.addEventListener("click", function () { state.page += 1; renderExamples(); if (b.classList.contains("spx-bottom")) $("spx-examples-head").scrollIntoView(); });
    });
    $("spx-only-clear").addEventListener("click", function () { state.only = null; markPicked(); renderExamples(); });
    $("spx-find").addEventListener("input", renderRecurring);
    $("spx-csv").addEventListener("click", function () {
      var lines = ["interaction,examples,mean_effect,positive,negative,total_abs_effect"];
      data.recurring.forEach(function (row) {
        lines.push(['"' + row[0].replace(/"/g, '""') + '"'].concat(row.slice(1, 6)).join(","));
      });
      var link = el("a");
      link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], {type: "text/csv"}));
      link.download = "recurring-interactions.csv";
      link.click();
    });
    $("spx-legend").appendChild(V.legend(null));
  }

  bind();
  renderRecurring();
  renderExamples();
  document.body.setAttribute("data-ready", String(performance.now()));
})();
