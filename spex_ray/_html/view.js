/* spex-ray explanation views, shared by the report page and Interactions._repr_html_.
 *
 * An example view is the compact object that spex_ray/_html/__init__.py builds:
 *   {id, w: [words], g: gaps (optional; one character per gap between words: " " a space,
 *    "\n" a new line, "0" nothing), e: [effect of keeping each word alone (order 1)],
 *    x: [[[i, j, ...], effect], ...] the strongest interactions, strongest first,
 *    r2: R² of these terms, fr: R² of the whole fit (when it differs), f: output with every feature
 *    kept, z: with every feature masked, t: target, err: error}
 * Missing keys are simply not shown. Colours: POS/NEG below match view.css's --spx-pos/--spx-neg.
 */
window.SpexView = window.SpexView || (function () {
  "use strict";
  var POS = [214, 96, 77], NEG = [67, 147, 195], SHOWN = 5;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function num(v) {
    if (v === null || v === undefined || !isFinite(v)) return "n/a";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return v.toFixed(a >= 100 ? 1 : 3);
  }

  function signed(v) {
    var text = num(v);
    return v > 0 ? "+" + text : text.replace("-", "\u2212");
  }

  function colour(v, scale) {
    if (!scale || !v) return "";
    var a = Math.min(1, Math.abs(v) / scale), rgb = v > 0 ? POS : NEG, out = [];
    for (var k = 0; k < 3; k++) out.push(Math.round(255 + (rgb[k] - 255) * a));
    return "rgb(" + out.join(",") + ")";
  }

  function maxAbs(values) {
    var m = 0;
    for (var i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i] || 0));
    return m;
  }

  function r2Badge(r2) {
    if (r2 === null || r2 === undefined) return null;
    var cls = r2 >= 0.9 ? "spx-good" : r2 >= 0.7 ? "spx-fair" : "spx-poor";
    var badge = el("span", "spx-badge " + cls, "R\u00b2 " + (isFinite(r2) ? r2.toFixed(3) : "n/a"));
    badge.title = "faithfulness: R\u00b2 of these terms on held-out random masks";
    return badge;
  }

  function meta(label, value) {
    var span = el("span", "spx-meta", label + " ");
    span.appendChild(el("b", null, value));
    return span;
  }

  /* The colour legend; `scale` is the |effect| drawn in full colour. */
  function legend(scale) {
    var box = el("div", "spx-legend");
    box.appendChild(el("span", null, "keeping the feature lowers the output"));
    var ramp = el("span", "spx-ramp");
    ramp.title = "full colour: |effect| \u2265 " + num(scale);
    box.appendChild(ramp);
    box.appendChild(el("span", null, "raises it"));
    if (scale) box.appendChild(el("span", null, "(full colour at \u00b1" + num(scale) + ")"));
    return box;
  }

  /* One example as a card. opts.scale: |effect| in full colour (default: the example's largest);
     opts.legend: draw the colour legend in the card; opts.rows: interactions shown before "show all";
     opts.mark: the position in ex.x of an interaction to mark (its row and words stay highlighted). */
  function card(ex, opts) {
    opts = opts || {};
    var box = el("div", "spx-card");
    box.setAttribute("data-id", ex.id);
    var head = el("div", "spx-head");
    if (ex.id) head.appendChild(el("span", "spx-id", ex.id));
    var badge = r2Badge(ex.r2);
    if (badge) head.appendChild(badge);
    if (ex.fr !== undefined) {
      var fit = meta("whole fit R\u00b2", num(ex.fr));
      fit.title = "R\u00b2 of every fitted term (the badge: of the terms shown here)";
      head.appendChild(fit);
    }
    if (ex.f !== undefined && ex.f !== null) head.appendChild(meta("output", num(ex.f)));
    if (ex.z !== undefined && ex.z !== null) head.appendChild(meta("all masked", num(ex.z)));
    if (ex.w && ex.w.length) head.appendChild(meta("features", String(ex.w.length)));
    if (ex.t) head.appendChild(meta("target", ex.t));
    box.appendChild(head);
    if (ex.err) {
      box.appendChild(el("div", "spx-error", "error: " + ex.err));
      return box;
    }
    var effects = ex.e || [], words = ex.w || [], gaps = ex.g;
    var scale = opts.scale || maxAbs(effects);
    if (!opts.legend) head.appendChild(meta("full colour at \u00b1", num(scale)));
    var text = el("div", "spx-text"), spans = [];
    for (var i = 0; i < words.length; i++) {
      if (i > 0) {
        var gap = gaps ? gaps.charAt(i - 1) : " ";
        if (gap !== "0") text.appendChild(document.createTextNode(gap));
      }
      var span = el("span", "spx-w", words[i]);
      var v = effects[i] || 0;
      if (v) span.style.background = colour(v, scale);
      span.title = words[i] + ": " + signed(v) + " (effect of keeping it)";
      spans.push(span);
      text.appendChild(span);
    }
    box.appendChild(text);
    if (opts.legend) box.appendChild(legend(scale));
    var terms = ex.x || [], names = labels(words);
    box.appendChild(el("div", "spx-sub", "Strongest interactions"));
    if (!terms.length) {
      box.appendChild(el("div", "spx-none", "no interaction terms"));
      return box;
    }
    var table = el("table", "spx-x"), top = maxAbs(terms.map(function (t) { return t[1]; }));
    var shown = opts.rows || SHOWN;
    terms.forEach(function (term, k) {
      var row = el("tr"), key = term[0], value = term[1];
      if (k === opts.mark) {
        row.className = "spx-marked";
        key.forEach(function (j) { if (spans[j]) spans[j].classList.add("spx-hl"); });
      } else if (k >= shown) {
        row.className = "spx-more";
      }
      var cell = el("td", "spx-words");
      key.forEach(function (j, at) {
        if (at) cell.appendChild(document.createTextNode(" \u00d7 "));
        cell.appendChild(document.createTextNode(words[j]));
        if (names[j]) cell.appendChild(el("sub", null, names[j]));
      });
      row.appendChild(cell);
      cell = el("td");
      var bar = el("div", "spx-bar"), fill = el("i");
      var width = top ? 50 * Math.abs(value) / top : 0;
      fill.style.width = width + "%";
      fill.style.left = value > 0 ? "50%" : (50 - width) + "%";
      fill.style.background = colour(value, Math.abs(value));
      bar.appendChild(fill);
      cell.appendChild(bar);
      row.appendChild(cell);
      row.appendChild(el("td", "spx-num", signed(value)));
      row.addEventListener("mouseenter", function () {
        key.forEach(function (j) { if (spans[j]) spans[j].classList.add("spx-hl"); });
      });
      row.addEventListener("mouseleave", function () {
        if (k !== opts.mark) key.forEach(function (j) { if (spans[j]) spans[j].classList.remove("spx-hl"); });
      });
      table.appendChild(row);
    });
    box.appendChild(table);
    if (terms.length > shown) {
      var more = el("button", "spx-toggle", "show all " + terms.length);
      more.addEventListener("click", function () {
        var open = table.classList.toggle("spx-open");
        more.textContent = open ? "show the strongest " + shown : "show all " + terms.length;
      });
      box.appendChild(more);
    }
    return box;
  }

  /* For words that occur more than once in the text, their occurrence number ("2" for the second "not"). */
  function labels(words) {
    var count = {}, seen = {}, out = [];
    words.forEach(function (w) { count[w] = (count[w] || 0) + 1; });
    words.forEach(function (w) {
      seen[w] = (seen[w] || 0) + 1;
      out.push(count[w] > 1 ? String(seen[w]) : "");
    });
    return out;
  }

  return {card: card, legend: legend, colour: colour, num: num, signed: signed, el: el};
})();
