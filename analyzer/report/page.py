"""The report page's style and script (inline: the page is one self-contained file).

The script decodes the connection table that ``table.pack`` embedded (base64 -> deflate ->
byte-shuffled typed columns), then pages, sorts and filters it in the browser. Only the page
on screen is ever turned into DOM rows: a million ``<tr>`` take a browser tens of seconds to lay
out, a hundred take a millisecond. When the first page is drawn it sets ``data-ready`` (ms since
navigation) on ``<html>``; a failure to decode sets ``data-table-error`` and says so on the page.
Clicking a value in the top-endpoint tables filters the table to it (drill-down): the filter
box then holds ``server=ADDR:PORT``, ``port=N``, ``client=ADDR`` or ``net=NETWORK``, exact
matches (anything else typed there matches as text, anywhere in a row).
"""

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{margin-bottom:.2em} .muted{color:#666} table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}
th{background:#f0f0f0} #connections th{cursor:pointer;user-select:none}
th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
tr.abnormal td.case, tr.abnormal td.case a{font-weight:bold;color:#b00} td.num{text-align:right}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
.controls{margin:.5em 0} .controls>*{margin-right:1em}
.tops{display:flex;flex-wrap:wrap;gap:0 1.5em} .tops table{min-width:16em}
.tops caption{text-align:left;font-weight:bold;font-size:13px}
a.drill{color:inherit;text-decoration:underline dotted;cursor:pointer}
section.conn{border-top:2px solid #ddd;margin-top:1.5em;padding-top:.5em}
section.conn img{max-width:100%;border:1px solid #eee}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em} dt{font-weight:bold}
code{background:#f6f6f6;padding:0 3px} .note{background:#fff6d5;padding:.4em;border:1px solid #ec6}
"""

JS = r"""
(function () {
  'use strict';
  var root = document.documentElement;
  var holder = document.getElementById('conn-data');
  var table = document.getElementById('connections');
  if (!holder || !table) return;
  var tbody = table.tBodies[0];
  var text = document.getElementById('filter'), sel = document.getElementById('case-filter');
  var abn = document.getElementById('abnormal-only'), count = document.getElementById('shown-count');
  var pageSel = document.getElementById('page-size'), pageInfo = document.getElementById('page-info');
  var anchors = JSON.parse(document.getElementById('conn-anchors').textContent);
  var TYPES = {uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, int32: Int32Array,
               float64: Float64Array};
  var D, n, col = {}, conn, start, order, page = 0, sortKey = null, sortAsc = true;

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]; });
  }
  function fail(msg) {
    root.setAttribute('data-table-error', msg);
    tbody.innerHTML = '<tr><td colspan="12">The table could not be decoded: ' + esc(msg) +
      '</td></tr>';
  }
  function bytesOf(b64) {
    var bin = atob(b64), u = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    return u;
  }
  function inflate(u) {
    var s = new Blob([u]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Response(s).arrayBuffer();
  }
  function column(body, spec) {  // undo the byte shuffle of one column
    var T = TYPES[spec.type], w = T.BYTES_PER_ELEMENT, src = body.subarray(spec.offset);
    if (w === 1) return new T(src.slice(0, n).buffer);
    var out = new Uint8Array(n * w);
    for (var b = 0; b < w; b++) {
      var plane = b * n;
      for (var i = 0; i < n; i++) out[i * w + b] = src[plane + i];
    }
    return new T(out.buffer);
  }
  function load(buf) {
    var body = new Uint8Array(buf);
    var len = new DataView(buf).getUint32(0, true);
    var head = JSON.parse(new TextDecoder().decode(body.subarray(4, 4 + len)));
    var rest = body.subarray(4 + len);
    D = head.dicts; n = head.n;
    for (var k in head.columns) col[k] = column(rest, head.columns[k]);
    conn = new Int32Array(n); start = new Float64Array(n);
    var c = 0, t = 0, sd = col.start_d;
    for (var i = 0; i < n; i++) {
      c += col.conn_d[i]; conn[i] = c;
      if (sd) { t += sd[i]; start[i] = t; } else start[i] = col.start_f[i];
    }
    col.abnormal = head.case_abnormal;
    col.caddr_net = head.caddr_net;
  }
  function base(path) { return path.replace(/^.*[\\/]/, ''); }
  function client(i) {
    var a = D.caddr[col.caddr[i]];
    return (a.indexOf(':') >= 0 ? '[' + a + ']' : a) + ':' + col.cport[i];
  }
  function secs(ms) { return (ms / 1e3).toFixed(3); }
  function cell(v, cls, title) {
    return '<td' + (cls ? ' class="' + cls + '"' : '') + (title ? ' title="' + esc(title) + '"' : '') +
      '>' + v + '</td>';
  }
  function row(i) {
    var f = D.file[col.file[i]], cs = D['case'][col['case'][i]], ab = col.abnormal[col['case'][i]];
    var a = anchors[f + '\t' + conn[i]];
    var caseHtml = a ? '<a href="#' + esc(a) + '">' + esc(cs) + '</a>' : esc(cs);
    return '<tr class="' + (ab ? 'abnormal' : 'normal') + '" data-file="' + esc(f) +
      '" data-conn="' + conn[i] + '" data-case="' + esc(cs) + '" data-abnormal="' + (ab ? 1 : 0) +
      '">' + cell(esc(base(f)), '', f) + cell(conn[i], 'num') + cell(esc(client(i))) +
      cell(esc(D.server[col.server[i]])) + cell(secs(start[i]), 'num') +
      cell(secs(col.dur[i]), 'num') + cell(col.packets[i], 'num') + cell(caseHtml, 'case') +
      cell(esc(D.closer[col.closer[i]] || '—')) + cell(esc(D.csees[col.csees[i]])) +
      cell(esc(D.ssees[col.ssees[i]])) + cell(esc(D.conf[col.conf[i]])) + '</tr>';
  }
  function ranks(dict) {  // the rank of each dictionary entry in sorted order
    var idx = dict.map(function (_, k) { return k; });
    idx.sort(function (a, b) { return dict[a] < dict[b] ? -1 : dict[a] > dict[b] ? 1 : 0; });
    var r = new Float64Array(dict.length);
    idx.forEach(function (k, pos) { r[k] = pos; });
    return r;
  }
  function keys(name) {
    var k = new Float64Array(n), i, r;
    var dictCol = {file: 'file', server: 'server', 'case': 'case', closer: 'closer',
                   client_sees: 'csees', server_sees: 'ssees', confidence: 'conf'}[name];
    if (dictCol) { r = ranks(D[dictCol]); var c = col[dictCol]; for (i = 0; i < n; i++) k[i] = r[c[i]]; }
    else if (name === 'client') {
      r = ranks(D.caddr);
      for (i = 0; i < n; i++) k[i] = r[col.caddr[i]] * 65536 + col.cport[i];
    }
    else if (name === 'conn') k.set(conn);
    else if (name === 'start') k.set(start);
    else if (name === 'duration') k.set(col.dur);
    else if (name === 'packets') k.set(col.packets);
    return k;
  }
  function exact(field, v) {  // "server=a:p", "port=p", "client=a", "net=n": what drill-down sets
    function entries(dict, test) {
      var ok = new Uint8Array(dict.length);
      dict.forEach(function (s, k) { ok[k] = test(s) ? 1 : 0; });
      return ok;
    }
    if (field === 'server') { var s = entries(D.server, function (x) { return x.toLowerCase() === v; });
      return function (i) { return s[col.server[i]]; }; }
    if (field === 'port') { var p = entries(D.server, function (x) { return x.slice(x.lastIndexOf(':') + 1) === v; });
      return function (i) { return p[col.server[i]]; }; }
    if (field === 'client') { var a = entries(D.caddr, function (x) { return x.toLowerCase() === v; });
      return function (i) { return a[col.caddr[i]]; }; }
    if (field === 'net') { var nets = entries(D.cnet, function (x) { return x.toLowerCase() === v; });
      return function (i) { return nets[col.caddr_net[col.caddr[i]]]; }; }
    return null;
  }
  function matcher(q) {  // per dictionary entry once, then per row only the client text
    if (!q) return null;
    var f = /^(server|port|client|net)=(.+)$/.exec(q);
    if (f) return exact(f[1], f[2]);
    function hits(dict) { return dict.map(function (s) { return s.toLowerCase().indexOf(q) >= 0; }); }
    var h = {file: hits(D.file.map(base)), server: hits(D.server), 'case': hits(D['case']),
             closer: hits(D.closer), csees: hits(D.csees), ssees: hits(D.ssees), conf: hits(D.conf)};
    return function (i) {
      for (var k in h) if (h[k][col[k][i]]) return true;
      return String(conn[i]).indexOf(q) >= 0 || client(i).toLowerCase().indexOf(q) >= 0;
    };
  }
  function apply() {
    var q = text.value.trim().toLowerCase(), c = sel.value, only = abn.checked;
    var ci = c ? D['case'].indexOf(c) : -1, m = matcher(q);
    var keep = new Uint32Array(n), k = 0;
    var base_ = sortKey ? sortKey.order : null;
    for (var j = 0; j < n; j++) {
      var i = base_ ? base_[j] : j, cs = col['case'][i];
      if (c && cs !== ci) continue;
      if (only && !col.abnormal[cs]) continue;
      if (m && !m(i)) continue;
      keep[k++] = i;
    }
    order = keep.subarray(0, k); page = 0;
    count.textContent = k.toLocaleString('en-US') + ' of ' + n.toLocaleString('en-US') +
      ' connections shown';
    draw();
  }
  function size() { return parseInt(pageSel.value, 10); }
  function pages() { return Math.max(1, Math.ceil(order.length / size())); }
  function draw() {
    var s = size(), from = page * s, to = Math.min(order.length, from + s), html = [];
    for (var j = from; j < to; j++) html.push(row(order[j]));
    tbody.innerHTML = html.join('');
    pageInfo.textContent = 'page ' + (page + 1) + ' of ' + pages();
  }
  function sortBy(th) {
    var asc = !th.classList.contains('asc');
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.classList.remove('asc', 'desc'); });
    th.classList.add(asc ? 'asc' : 'desc');
    var k = keys(th.dataset.key), idx = new Uint32Array(n);
    for (var i = 0; i < n; i++) idx[i] = i;
    idx.sort(function (a, b) { return (asc ? k[a] - k[b] : k[b] - k[a]) || a - b; });
    sortKey = {order: idx};
    apply();
  }
  function go(p) { page = Math.min(Math.max(0, p), pages() - 1); draw(); }
  function wire() {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.addEventListener('click', function () { sortBy(th); }); });
    var timer = null;
    text.addEventListener('input', function () { clearTimeout(timer); timer = setTimeout(apply, 200); });
    text.addEventListener('change', apply);
    [sel, abn].forEach(function (el) { el.addEventListener('change', apply); });
    pageSel.addEventListener('change', function () { go(0); });
    var nav = {'page-first': function () { go(0); }, 'page-prev': function () { go(page - 1); },
               'page-next': function () { go(page + 1); }, 'page-last': function () { go(pages() - 1); }};
    Object.keys(nav).forEach(function (id) {
      document.getElementById(id).addEventListener('click', nav[id]); });
    Array.prototype.forEach.call(document.querySelectorAll('a.drill'), function (a) {
      a.addEventListener('click', function (e) {
        e.preventDefault();
        sel.value = a.dataset.case || ''; abn.checked = false; sortKey = null;
        Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
          h.classList.remove('asc', 'desc'); });
        text.value = a.dataset.filter; apply();
        table.scrollIntoView();
      });
    });
  }
  try {
    if (typeof DecompressionStream === 'undefined') throw new Error('this browser has no DecompressionStream');
    inflate(bytesOf(holder.textContent.trim())).then(function (buf) {
      load(buf); wire(); apply();
      root.setAttribute('data-ready', performance.now().toFixed(0));
    }).catch(function (e) { fail(e && e.message || String(e)); });
  } catch (e) { fail(e.message); }
})();

(function () {  // documents' Chinese quotes: shown only where a font can draw them
  var spans = document.querySelectorAll('[data-cjk]');
  if (!spans.length) return;
  function pixels(ch) {
    var c = document.createElement('canvas'); c.width = c.height = 40;
    var x = c.getContext('2d'); x.font = '32px sans-serif'; x.fillText(ch, 2, 34);
    return Array.prototype.join.call(x.getImageData(0, 0, 40, 40).data, '');
  }
  var cjk = pixels('\u7684\u6587'), none = pixels('\uE000\uE001');  // U+E000: private use
  if (cjk === none || cjk === pixels('')) return;  // a box or nothing: keep the plain text
  Array.prototype.forEach.call(spans, function (s) { s.textContent = s.dataset.cjk; });
})();
"""
