"""Who is resetting whom: the aggregates a person reads before any single connection.

Computed here once, vectorized over a pandas table of records (the ``connections`` table, or any
frame with at least ``case``, ``client`` and ``server``), and used by the text view, ``analyze
--summary-json``, ``Analysis.top()`` and the HTML report, so that all four agree:

    case_table(df) -> DataFrame          case, title, abnormal, count, share (catalog order)
    top(df, by="server", case=None, n=10) -> DataFrame   case, <by>, count, share
    server_rates(df, n=20) -> DataFrame  per server endpoint: connections, resets, abnormal
    endings_over_time(df, bins) -> (edges, {case: counts})   seconds since the first packet
    summary_object(df, n_files, n=10) -> dict                the --summary-json object

``by``: ``server`` (addr:port), ``server_addr``, ``server_port``, ``client`` (addr:port),
``client_addr`` or ``client_net`` (the client's /24, or /64 for IPv6). Shares are of the case's
connections (of all connections when ``case`` is None and no case is given), rounded nowhere.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd

from analyzer import cases

BY = ("server", "server_addr", "server_port", "client", "client_addr", "client_net")
# Zeek's conn_state for an ending with a RST in it (REJ: the SYN was answered by one)
# what the text view, --summary-json and the report show for each abnormal case
TOP_BY = ("server", "server_port", "client_addr", "client_net")
RESET_STATES = ("REJ", "RSTO", "RSTR", "RSTOS0", "RSTRH")
_ORDER = {c.id: i for i, c in enumerate(cases.CATALOG)}


def as_frame(data) -> pd.DataFrame:
    """An ``Analysis``, a DataFrame or a list of record dicts, as a DataFrame."""
    if hasattr(data, "connections"):
        return data.connections
    if isinstance(data, pd.DataFrame):
        return data
    return pd.DataFrame(list(data), columns=None)


def categorical(s: pd.Series) -> pd.Categorical:
    """``s`` as a Categorical without missing values (a missing value becomes "")."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cat = s.array
        if (cat.codes < 0).any():
            if "" not in cat.categories:
                cat = cat.add_categories([""])
            cat = cat.fillna("")
        return cat
    codes, uniques = pd.factorize(s.to_numpy(object))  # (no sort: a million strings are slow)
    uniques = list(uniques)
    if (codes < 0).any():  # missing values: the entry ""
        if "" not in uniques:
            uniques.append("")
        codes = np.where(codes < 0, uniques.index(""), codes)
    return pd.Categorical.from_codes(codes, categories=pd.Index(uniques, dtype=object))


def _derive(cat: pd.Categorical, values: np.ndarray, index) -> pd.Series:
    """A categorical Series whose row i holds ``values[code of row i]``: a value computed once
    per category (an address from an endpoint, a network from an address) costs one integer
    lookup per row, not one string."""
    codes, uniques = pd.factorize(values)
    return pd.Series(pd.Categorical.from_codes(codes[cat.codes], categories=pd.Index(
        uniques, dtype=object)), index=index)


def split(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``addr:port`` -> (addr, port as text), as categoricals. Done on the distinct values only:
    a million connections have a few thousand servers, and string work per row is slow."""
    cat = categorical(s)
    if not len(cat.categories):
        empty = pd.Series([], index=s.index, dtype=object)
        return empty, empty.copy()
    parts = pd.Series(cat.categories, dtype=object).str.rpartition(":")
    addr = parts[0].str.strip("[]").to_numpy(object)
    return _derive(cat, addr, s.index), _derive(cat, parts[2].to_numpy(object), s.index)


def network(addrs: np.ndarray) -> np.ndarray:
    """The /24 of each IPv4 address, the /64 of each IPv6 one (for distinct addresses)."""
    out = np.empty(len(addrs), dtype=object)
    for i, a in enumerate(addrs):
        if ":" in a:
            try:
                out[i] = str(ipaddress.ip_network(f"{a}/64", strict=False))
            except ValueError:
                out[i] = a
        else:
            out[i] = a.rpartition(".")[0] + ".0/24" if a.count(".") == 3 else a
    return out


def key(df: pd.DataFrame, by: str, _split_cache: dict | None = None) -> pd.Series:
    """The column ``by`` names (see the module docstring), one value per row of ``df``. The
    report's compact table holds ``client_addr`` and ``client_port`` instead of ``client``."""
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}, not {by!r}")
    if by in df.columns:
        return df[by]
    side, _, part = by.partition("_")
    if part == "net":
        cat = categorical(key(df, f"{side}_addr", _split_cache))
        return _derive(cat, network(np.asarray(cat.categories, dtype=object)), df.index)
    if side not in df.columns:  # addr and port columns: join them
        addr = df[f"{side}_addr"].astype(object).astype(str)
        addr = addr.where(~addr.str.contains(":", regex=False), "[" + addr + "]")
        return addr + ":" + df[f"{side}_port"].astype(str)
    if not part:
        return df[side]
    cache = {} if _split_cache is None else _split_cache
    if side not in cache:  # the address and the port come from one split
        cache[side] = split(df[side])
    addr, port = cache[side]
    return port if part == "port" else addr


def keyed(df: pd.DataFrame, bys=TOP_BY) -> pd.DataFrame:
    """``case`` and a column per key of ``bys``, each computed once (an ``addr:port`` column is
    split once for both its parts): for several ``top()`` and ``distinct()`` calls."""
    cache: dict = {}
    cols = {"case": categorical(df["case"]),
            **{by: categorical(key(df, by, cache)) for by in bys}}
    return pd.DataFrame(cols, index=df.index)


def case_table(df: pd.DataFrame) -> pd.DataFrame:
    """Connections per case, in the catalog's order (abnormal cases first, as it lists them)."""
    counts = df["case"].value_counts(sort=False) if len(df) else pd.Series(dtype=int)
    total = int(counts.sum())
    ids = sorted(counts.index, key=lambda c: (_ORDER.get(c, len(_ORDER)), c))
    return pd.DataFrame({
        "case": ids,
        "title": [cases.BY_ID[c].title if c in cases.BY_ID else c for c in ids],
        "abnormal": [c in cases.ABNORMAL for c in ids],
        "count": [int(counts[c]) for c in ids],
        "share": [int(counts[c]) / total for c in ids],
    }, columns=["case", "title", "abnormal", "count", "share"])


def top(df: pd.DataFrame, by: str = "server", case=None, n: int | None = 10) -> pd.DataFrame:
    """The ``n`` most frequent values of ``by`` per case (every case in ``df``, or those in
    ``case``, a case id or a list of them): case, <by>, count, share of the case's connections.
    Cases in catalog order; within a case, by count, then value."""
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}, not {by!r}")
    if case is not None:
        wanted = [case] if isinstance(case, str) else list(case)
        unknown = [c for c in wanted if c not in cases.BY_ID]
        if unknown:
            raise ValueError(f"unknown case id(s): {', '.join(unknown)}")
        df = df[df["case"].isin(wanted)]
    cols = ["case", by, "count", "share"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    g = _pairs(df, by)
    if n is not None:  # the n largest counts per case, and any value tied with the n-th
        nth = g.groupby("case", sort=False)["count"].transform(
            lambda c: c.nlargest(n).min())
        g = g[g["count"] >= nth]
    g = g.sort_values(["_order", "case", "count", by], ascending=[True, True, False, True],
                      kind="stable")
    if n is not None:
        g = g.groupby("case", sort=False).head(n)
    return g[cols].reset_index(drop=True)


def _pairs(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """Every (case, value) pair of ``df`` with its count and share, counted on integer codes."""
    kc, cc = categorical(key(df, by)), categorical(df["case"])
    width = max(1, len(kc.categories))
    combo = cc.codes.astype(np.int64) * width + kc.codes
    uniq, counts = np.unique(combo, return_counts=True)
    g = pd.DataFrame({"case": np.asarray(cc.categories, dtype=object)[uniq // width],
                      by: np.asarray(kc.categories, dtype=object)[uniq % width],
                      "count": counts.astype(np.int64)})
    g["share"] = g["count"] / g.groupby("case", sort=False)["count"].transform("sum")
    g["_order"] = g["case"].map(_ORDER).fillna(len(_ORDER))
    return g


def distinct(df: pd.DataFrame, by: str) -> pd.Series:
    """How many distinct values of ``by`` each case has (to say how many a top list left out)."""
    if df.empty:
        return pd.Series(dtype=int)
    kc, cc = categorical(key(df, by)), categorical(df["case"])
    combo = np.unique(cc.codes.astype(np.int64) * max(1, len(kc.categories)) + kc.codes)
    per = np.bincount(combo // max(1, len(kc.categories)), minlength=len(cc.categories))
    return pd.Series(per, index=pd.Index(cc.categories, dtype=object)).loc[lambda s: s > 0]


def is_reset(df: pd.DataFrame) -> np.ndarray:
    """True where the ending had a RST in it, by Zeek's conn_state for the same packets."""
    if "zeek_state" not in df:
        return np.zeros(len(df), dtype=bool)
    return df["zeek_state"].isin(RESET_STATES).to_numpy()


def server_rates(df: pd.DataFrame, n: int | None = 20) -> pd.DataFrame:
    """Per server endpoint: connections, resets (and their share), abnormal endings (and their
    share); the servers with the most resets first, then the most abnormal endings."""
    cols = ["server", "connections", "resets", "reset_share", "abnormal", "abnormal_share"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    t = pd.DataFrame({"server": categorical(df["server"]),
                      "resets": is_reset(df),
                      "abnormal": df["case"].isin(cases.ABNORMAL).to_numpy()})
    g = t.groupby("server", observed=True).agg(connections=("resets", "size"),
                                               resets=("resets", "sum"),
                                               abnormal=("abnormal", "sum")).reset_index()
    g["server"] = g["server"].astype(object)
    g["reset_share"] = g["resets"] / g["connections"]
    g["abnormal_share"] = g["abnormal"] / g["connections"]
    g = g.sort_values(["resets", "abnormal", "connections", "server"],
                      ascending=[False, False, False, True], kind="stable")
    if n is not None:
        g = g.head(n)
    return g[cols].reset_index(drop=True).astype({"resets": int, "abnormal": int})


def endings_over_time(df: pd.DataFrame, bins: int = 60, t0: float | None = None
                      ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Bin edges (seconds since ``t0``, default the first packet) and, per case in catalog
    order, how many connections ended in each bin."""
    if df.empty:
        return np.array([0.0, 1.0]), {}
    start = df["start"].to_numpy(float)
    end = df["end"].to_numpy(float)
    t0 = float(np.nanmin(start)) if t0 is None else t0
    end = np.nan_to_num(end - t0, nan=0.0)
    span = max(float(end.max()), 1e-6)
    edges = np.linspace(0.0, span * 1.0001, max(1, bins) + 1)
    codes, ids = pd.factorize(df["case"])
    which = np.clip(np.searchsorted(edges, end, side="right") - 1, 0, len(edges) - 2)
    table = np.zeros((len(ids), len(edges) - 1), dtype=np.int64)
    np.add.at(table, (codes, which), 1)
    order = sorted(range(len(ids)), key=lambda i: (_ORDER.get(ids[i], len(_ORDER)), ids[i]))
    return edges, {str(ids[i]): table[i] for i in order}


def summary_object(df: pd.DataFrame, n_files: int, n: int = 10) -> dict:
    """Everything the text view's summary says, as one JSON-ready object: per case its count and
    share and, for an abnormal case, ``top``: per ``TOP_BY`` key the ``n`` most frequent values
    (value, count, share of the case) and how many distinct values there are."""
    ct = case_table(df)
    abnormal = keyed(df[df["case"].isin(cases.ABNORMAL)]) if len(df) else df
    tops = {by: top(abnormal, by, n=n) for by in TOP_BY}
    counts = {by: distinct(abnormal, by) for by in TOP_BY}
    out_cases = []
    for row in ct.itertuples(index=False):
        entry = {"case": row.case, "title": row.title, "abnormal": bool(row.abnormal),
                 "count": int(row.count), "share": round(float(row.share), 6)}
        if row.abnormal:
            entry["top"] = {}
            for by, t in tops.items():
                sel = t[t["case"] == row.case]
                entry["top"][by] = {
                    "distinct": int(counts[by].get(row.case, 0)),
                    "values": [{"value": str(v), "count": int(c), "share": round(float(s), 6)}
                               for v, c, s in zip(sel[by], sel["count"], sel["share"],
                                                  strict=True)]}
        out_cases.append(entry)
    return {"connections": int(len(df)), "files": int(n_files),
            "abnormal": int(ct.loc[ct["abnormal"], "count"].sum()) if len(ct) else 0,
            "cases": out_cases}
