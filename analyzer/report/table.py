"""The report's connection table: the columns it needs, gathered compactly, and packed for the
page as typed columns (gzip + base64) that the browser decodes, pages and filters itself.

    COLUMNS                         the record fields the report reads
    Collector(per_case)             ``add(record)`` one at a time (``rstscope report`` streams
                                    the pipeline into it); ``frame()`` -> compact DataFrame;
                                    ``samples`` -> the full records of the first ``per_case``
                                    connections to end of each abnormal case (for timelines)
    compact(df) -> DataFrame        the same table from an ``Analysis.connections`` frame
    sample(df, per_case) -> [dict]  the same sample from such a frame
    pack(df, t0) -> str             the base64 blob the page script decodes

Why not one ``<tr>`` per connection: at a million connections that is a 50 MB page that takes a
browser tens of seconds to lay out. Strings that repeat (servers, cases, errno lists) are stored
once and referenced by number; clients are split into address (repeats) and port.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from array import array

import numpy as np
import pandas as pd

from analyzer import cases
from analyzer.report import aggregate

# the report's table: repeated strings are pandas categoricals, clients split in address + port
CATEGORIES = ("file", "client_addr", "server", "case", "closer", "client_sees", "server_sees",
              "confidence", "zeek_state")
NUMBERS = {"conn": "q", "client_port": "i", "start": "d", "end": "d", "packets": "q",
           "first_frame": "q", "last_frame": "q"}
COLUMNS = ("file", "conn", "client_addr", "client_port", "server", "start", "end", "packets",
           "case", "closer", "client_sees", "server_sees", "confidence", "zeek_state",
           "first_frame", "last_frame")


def sees_text(v) -> str:
    """An errno list as one string ("" for none), so that equal lists are one dictionary entry."""
    if v is None or isinstance(v, float):
        return ""
    return ", ".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else str(v)


def _null(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _missing(x) -> bool:
    return _null(x) or x == ""


def confidence_text(confidence, rival) -> str:
    """"certain", or "likely (or <rival>)"; never "nan" or "None" (pandas fills with NaN)."""
    if _missing(confidence):
        return "—"
    return str(confidence) if _missing(rival) else f"{confidence} (or {rival})"


# fields of a record that take few distinct combinations together: coded as one tuple
_VERDICT = ("case", "closer", "client_sees", "server_sees", "confidence", "rival", "zeek_state")


class Collector:
    """The report's columns, one record at a time, without keeping the records. The fields of
    the verdict (case, closer, errno lists, confidence, Zeek state) are coded together, one
    dict lookup for all of them (a capture has a few dozen combinations); file, client address
    and server get a dict each; numbers go to typed arrays (a few µs a record)."""

    def __init__(self, per_case: int = 3):
        self.per_case = per_case
        self.codes = {c: array("i") for c in ("file", "client_addr", "server", "verdict")}
        self.values: dict[str, dict] = {c: {} for c in self.codes}
        self.numbers = {c: array(t) for c, t in NUMBERS.items()}
        self.samples: list[dict] = []
        self._sampled: dict[str, int] = {}

    def add(self, rec: dict) -> None:
        # (lookups inlined: this runs once per connection, a million times)
        values, codes, num = self.values, self.codes, self.numbers
        addr, _, port = rec["client"].rpartition(":")
        files, addrs, servers = values["file"], values["client_addr"], values["server"]
        codes["file"].append(files.setdefault(rec["file"], len(files)))
        codes["client_addr"].append(addrs.setdefault(addr.strip("[]"), len(addrs)))
        codes["server"].append(servers.setdefault(rec["server"], len(servers)))
        try:
            key = (rec["case"], rec["closer"], tuple(rec["client_sees"]),
                   tuple(rec["server_sees"]), rec["confidence"], rec["rival"],
                   rec["zeek_state"])
            code = values["verdict"].get(key)
        except TypeError:  # a NaN for a list, from a pandas row
            code = None
        if code is None:  # (a NaN never equals itself either: look it up as None)
            key = tuple(None if _null(v) else tuple(v) if isinstance(v, list | tuple) else v
                        for v in (rec.get(f) for f in _VERDICT))
            code = values["verdict"].setdefault(key, len(values["verdict"]))
        codes["verdict"].append(code)
        num["client_port"].append(int(port))
        num["conn"].append(rec["conn"])
        num["start"].append(rec["start"])
        num["end"].append(rec["end"])
        num["packets"].append(rec["packets"])
        num["first_frame"].append(rec["first_frame"])
        num["last_frame"].append(rec["last_frame"])
        if rec["abnormal"] and self._sampled.get(rec["case"], 0) < self.per_case:
            self._sampled[rec["case"]] = self._sampled.get(rec["case"], 0) + 1
            self.samples.append(rec)

    def add_batch(self, batch) -> None:
        """``add`` for every row of a columns batch (``analyzer.core.columns.Batch``), in its
        order, with no record made but for the samples: the same codes, dictionaries and
        numbers, computed over the arrays."""
        from analyzer.core import batch as columns  # (the code tables, as arrays)

        a, values, codes = batch.a, self.values, self.codes
        rows = np.arange(len(batch))
        self._code("file", batch.file(rows))
        self._code("client_addr", batch.address("client", rows))
        self._code("server", batch.endpoint("server", rows))
        # the verdict's fields as one integer per row, then one tuple per distinct integer
        key = np.zeros(len(batch), dtype=np.int64)
        parts = [a["case"], a["closer"], a["n_sees"][:, 0], *a["sees"][:, :2].T,
                 a["n_sees"][:, 1], *a["sees"][:, 2:].T, a["confidence"],
                 a["rival"].astype(np.int64) + 1, a["zeek_state"]]
        bits = (7, 2, 2, 4, 4, 2, 4, 4, 1, 7, 4)  # (41 in all: cases < 64, errnos < 16, ...)
        for part, width in zip(parts, bits, strict=True):
            key = (key << width) | part.astype(np.int64)
        local, uniques = pd.factorize(key)
        remap = np.empty(len(uniques), dtype=np.int32)
        verdicts = values["verdict"]
        for i, k in enumerate(uniques.tolist()):
            f = []
            for width in reversed(bits):
                f.append(k & ((1 << width) - 1))
                k >>= width
            (zeek, rival, conf, s1, s0, ns, c1, c0, nc, closer, case) = f
            sees = [columns.ERRNOS[e] for e in (c0, c1)]
            ssees = [columns.ERRNOS[e] for e in (s0, s1)]
            vkey = (columns.CASE_IDS[case], columns.CLOSERS[closer], tuple(sees[:nc]),
                    tuple(ssees[:ns]), columns.CONFIDENCES[conf],
                    columns.CASE_IDS[rival - 1] if rival else None, columns.ZEEK_STATES[zeek])
            remap[i] = verdicts.setdefault(vkey, len(verdicts))
        codes["verdict"].extend(remap[local].tolist())
        num = self.numbers
        num["client_port"].extend(a["client_port"].tolist())
        for name in ("conn", "start", "end", "packets", "first_frame", "last_frame"):
            num[name].extend(a[name].tolist())
        # the samples: the first per_case rows to end of each abnormal case
        picks = []
        for code in np.unique(a["case"][columns.CASE_ABNORMAL[a["case"]]]):
            case = columns.CASE_IDS[code]
            room = self.per_case - self._sampled.get(case, 0)
            if room > 0:
                at = np.flatnonzero(a["case"] == code)[:room]
                self._sampled[case] = self._sampled.get(case, 0) + len(at)
                picks.append(at)
        if picks:
            self.samples.extend(batch.records(np.sort(np.concatenate(picks))))

    def _code(self, name: str, column: np.ndarray) -> None:
        """Codes of ``column``'s values in dictionary ``name``, new values in order of first
        appearance (as ``add`` gives them)."""
        local, uniques = pd.factorize(column)
        known = self.values[name]
        remap = np.array([known.setdefault(u, len(known)) for u in uniques.tolist()],
                         dtype=np.int32)
        self.codes[name].extend(remap[local].tolist() if len(remap) else [])

    def __len__(self) -> int:
        return len(self.numbers["conn"])

    def _categories(self, name: str) -> tuple[np.ndarray, list]:
        """Codes and categories of a coded column; a missing value (None, or NaN from a
        pandas row) is coded -1, as pandas codes it, not as a category."""
        values = list(self.values[name])  # in code order: dicts keep insertion order
        codes = np.frombuffer(self.codes.pop(name), dtype=np.int32).copy()
        return _without_null(codes, values)

    def _verdict_columns(self) -> dict[str, pd.Categorical]:
        """The verdict's columns, from each combination's values and the rows' codes."""
        per = list(self.values["verdict"])
        rows = np.frombuffer(self.codes.pop("verdict"), dtype=np.int32)
        fields = dict(zip(_VERDICT, zip(*per, strict=True), strict=True)) if per else \
            {f: () for f in _VERDICT}
        text = {"case": list(fields["case"]), "closer": list(fields["closer"]),
                "client_sees": [sees_text(v) for v in fields["client_sees"]],
                "server_sees": [sees_text(v) for v in fields["server_sees"]],
                "confidence": [confidence_text(c, r) for c, r in
                               zip(fields["confidence"], fields["rival"], strict=True)],
                "zeek_state": list(fields["zeek_state"])}
        out = {}
        for name, values in text.items():
            codes, uniques = pd.factorize(np.asarray(values, dtype=object))
            codes, cats = _without_null(codes[rows] if len(rows) else
                                        np.zeros(0, np.int64), list(uniques))
            out[name] = pd.Categorical.from_codes(codes, categories=pd.Index(cats,
                                                                             dtype=object))
        return out

    def frame(self) -> pd.DataFrame:
        """The table (the collector is emptied: its arrays move into the frame)."""
        data = self._verdict_columns()
        for name in COLUMNS:
            if name in NUMBERS:
                arr = self.numbers.pop(name)  # (each array freed as soon as it is copied)
                data[name] = np.array(arr, dtype=np.float64 if arr.typecode == "d"
                                      else np.int64)
            elif name not in data:
                codes, cats = self._categories(name)
                data[name] = pd.Categorical.from_codes(codes, categories=pd.Index(
                    cats, dtype=object))
        return _finish(pd.DataFrame(data, columns=list(COLUMNS)))


def _without_null(codes: np.ndarray, values: list) -> tuple[np.ndarray, list]:
    """Codes into ``values`` with the missing ones (None, NaN; pandas' factorize gives -1)
    coded -1 and left out of the categories."""
    if not any(_null(v) for v in values):
        return codes, values
    remap, kept = np.empty(len(values) + 1, dtype=np.int64), []
    remap[-1] = -1  # (a code of -1 stays -1)
    for i, v in enumerate(values):
        remap[i] = -1 if _null(v) else len(kept)
        if not _null(v):
            kept.append(v)
    return remap[codes] if len(codes) else codes, kept


def _finish(df: pd.DataFrame) -> pd.DataFrame:
    df["abnormal"] = np.asarray(df["case"].isin(cases.ABNORMAL), dtype=bool)
    df["duration"] = (df["end"] - df["start"]).round(6)
    return df.sort_values(["file", "conn"], kind="stable").reset_index(drop=True)


def compact(df: pd.DataFrame) -> pd.DataFrame:
    """The report's table from a full connections frame (``Analysis.connections``)."""
    addr, port = aggregate.split(df["client"])
    rival = df["rival"] if "rival" in df else [None] * len(df)
    data = {
        "client_addr": addr, "client_port": pd.to_numeric(port).astype(np.int64),
        "client_sees": [sees_text(v) for v in df["client_sees"]],
        "server_sees": [sees_text(v) for v in df["server_sees"]],
        "confidence": [confidence_text(c, r) for c, r in zip(df["confidence"], rival,
                                                             strict=True)]}
    out = {}
    for name in COLUMNS:
        v = data[name] if name in data else df[name]
        out[name] = pd.Categorical(pd.Series(v, dtype=object, index=df.index)) \
            if name in CATEGORIES else pd.Series(v, index=df.index).astype(
                np.float64 if NUMBERS[name] == "d" else np.int64)
    return _finish(pd.DataFrame(out, columns=list(COLUMNS)))


def sample(df: pd.DataFrame, per_case: int) -> list[dict]:
    """Full records of the first ``per_case`` connections to end of each abnormal case."""
    ab = df[df["abnormal"].astype(bool)] if len(df) else df
    if ab.empty or per_case <= 0:
        return []
    files = {f: i for i, f in enumerate(dict.fromkeys(df["file"]))}
    order = ab.assign(_f=ab["file"].map(files)).sort_values(["_f", "last_frame"], kind="stable")
    return order.groupby("case", sort=False).head(per_case).drop(columns="_f") \
        .to_dict("records")


def _codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Dictionary codes in the smallest unsigned type that holds them, and the dictionary
    (a missing value is the entry "")."""
    cat = aggregate.categorical(values)
    names = [str(c) for c in cat.categories]
    dtype = np.uint8 if len(names) <= 1 << 8 else np.uint16 if len(names) <= 1 << 16 \
        else np.uint32
    return np.asarray(cat.codes).astype(dtype), names


def pack(df: pd.DataFrame, t0: float) -> str:
    """The table as one base64 string: deflate of a little-endian u32 header length, the JSON
    header (per column its type, offset and length; the dictionaries of repeated strings), then
    the columns, each byte-shuffled (all first bytes, then all second bytes, ...: neighbouring
    small numbers then share long runs of zero bytes, which is what deflate compresses).
    Times are milliseconds (since ``t0`` for starts); connection numbers and starts are
    differences from the previous row (rows are in file, conn order, so nearly always small)."""
    n = len(df)
    cols: dict[str, np.ndarray] = {}
    dicts: dict[str, list[str]] = {}
    for name, key in (("file", "file"), ("caddr", "client_addr"), ("server", "server"),
                      ("case", "case"), ("closer", "closer"), ("csees", "client_sees"),
                      ("ssees", "server_sees"), ("conf", "confidence")):
        cols[name], dicts[name] = _codes(df[key])
    cols["cport"] = df["client_port"].to_numpy(np.int64).clip(0, 65535).astype(np.uint16)
    cols["conn_d"] = np.diff(df["conn"].to_numpy(np.int64), prepend=0).astype(np.int32)
    # milliseconds: what the table shows, and a third of the bytes of microseconds
    start_ms = np.rint((df["start"].to_numpy(float) - t0) * 1e3).astype(np.int64)
    delta = np.diff(start_ms, prepend=0)
    if not n or np.abs(delta).max() < 2**31:
        cols["start_d"] = delta.astype(np.int32)
    else:  # a pause of more than 24 days between two connections
        cols["start_f"] = start_ms.astype(np.float64)
    dur = np.rint((df["end"].to_numpy(float) - df["start"].to_numpy(float)) * 1e3)
    cols["dur"] = dur.clip(0, 2**32 - 1).astype(np.uint32)
    cols["packets"] = df["packets"].to_numpy(np.int64).clip(0, 2**32 - 1).astype(np.uint32)
    # each client address's network, once per address (the page's net= filter)
    nets = aggregate.network(np.asarray(dicts["caddr"], dtype=object))
    net_codes, dicts["cnet"] = pd.factorize(nets) if len(nets) else (np.zeros(0, int), [])
    header: dict = {"n": n, "columns": {}, "dicts": {**dicts, "cnet": [str(x) for x in
                                                                       dicts["cnet"]]},
                    "caddr_net": [int(c) for c in net_codes],
                    "case_abnormal": [c in cases.ABNORMAL for c in dicts["case"]]}
    offsets, offset = [], 0
    for name, arr in cols.items():
        header["columns"][name] = {"type": arr.dtype.name, "offset": offset}
        size = arr.nbytes + (-arr.nbytes % 8)  # typed arrays need aligned offsets
        offsets.append(size)
        offset += size
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    head += b" " * (-(len(head) + 4) % 8)
    # compressed column by column: the raw columns are never joined in memory
    z = zlib.compressobj(6)
    out = [z.compress(len(head).to_bytes(4, "little") + head)]
    for arr, size in zip(cols.values(), offsets, strict=True):
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        out.append(z.compress(arr.view(np.uint8).reshape(n, arr.itemsize).T.tobytes()))
        out.append(z.compress(b"\0" * (size - arr.nbytes)))
    out.append(z.flush())
    return base64.b64encode(b"".join(out)).decode("ascii")
