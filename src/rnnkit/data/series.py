"""Time series files read onto a regular time grid, with missing values made explicit (`Series`).

    series   values (N, C) on a regular time grid (C series/value columns), NaN where missing,
             `observed` (N, C) bool, optional timestamps (N,)

Missing values are never dropped silently: `load_series` reports how many steps
are missing per column, then either interpolates them (`missing="interpolate"`),
keeps them as NaN with an `observed` mask the model and the metrics respect
(`missing="mask"`), or refuses (`missing="error"`).

Formats: CSV or Parquet with a time column (or an integer step index) and value
columns (pandas); a plain text file with one number a line and no timestamps (the
Cortez ISP series);
and the Kaggle "Computer Network Traffic" file `cs448b_ipasn.csv`
(`date,l_ipn,r_asn,f`), read by `load_kaggle_ipasn` as one daily series per
local machine.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._optional import missing_extra, require
from .text import DataError, read_text_file
from ..errors import InputError

PathLike = Union[str, Path]
MISSING_POLICIES = ("interpolate", "mask", "error")


@dataclass
class Series:
    """C aligned series on a regular grid.

    values:   (N, C) float64, NaN where a value is missing (after interpolation none are).
    observed: (N, C) bool, False where the value was missing in the file (also after interpolation).
    times:    (N,) numpy datetime64 timestamps, or None when the file has none (evenly spaced steps).
    freq:     pandas frequency string ("h", "5min", "D") or None without timestamps.
    columns:  the C column names.
    missing:  {column: count of missing steps}; report: human-readable lines about what was done.
    """

    values: np.ndarray
    observed: np.ndarray
    times: Optional[np.ndarray]
    freq: Optional[str]
    columns: List[str]
    missing: Dict[str, int] = field(default_factory=dict)
    report: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def num_series(self) -> int:
        return self.values.shape[1]

    def extended(self, values: np.ndarray) -> "Series":
        """This series with `values` (K, C) appended as observed steps, its clock continued."""
        times = None if self.times is None else np.concatenate([self.times, self.future_times(len(self), len(values))])
        observed = np.concatenate([self.observed, np.ones(values.shape, bool)])
        return Series(np.concatenate([self.values, values]), observed, times, self.freq, list(self.columns))

    def future_times(self, start: int, count: int) -> Optional[np.ndarray]:
        """Timestamps of steps start .. start+count-1 (may run past the end of the data)."""
        if self.times is None or self.freq is None:
            return None
        pd = _pandas()
        return pd.date_range(pd.Timestamp(self.times[0]), periods=start + count, freq=self.freq)[start:].values


# ------------------------------------------------------------------ loading
def _pandas():
    return require("pandas", extra="forecast", purpose="time series")


def load_series(path: PathLike, *, time_column: Optional[str] = None, value_columns: Optional[Sequence[str]] = None,
                freq: Optional[str] = None, aggregate: str = "mean", missing: str = "interpolate",
                start: Optional[str] = None) -> Series:
    """Read a series file and put it on a regular grid.

    path: .csv / .parquet (needs `time_column`, default the first column, and value
        columns, default every other column; a time column of integers is a step index,
        see series_from_frame) or .txt (one number a line, no timestamps). Without
        timestamps, `start` and `freq` attach nominal ones, needed for calendar features.
    freq: target frequency (pandas alias, e.g. "h", "5min", "D"). With it the data are
        resampled (`aggregate`: "mean" or "sum" per bucket); without it the step is
        inferred, and an index that is not on a regular grid is an error.
    missing: "interpolate" (linear in time; reported), "mask" (kept as NaN and masked
        downstream; reported) or "error".
    """
    if missing not in MISSING_POLICIES:
        raise InputError(f"missing must be one of {MISSING_POLICIES}; got {missing!r}")
    if aggregate not in ("mean", "sum"):
        raise InputError(f"aggregate must be 'mean' or 'sum'; got {aggregate!r}")
    p = Path(path)
    if not p.exists():
        raise DataError(f"series file {str(p)!r} does not exist")
    if p.suffix == ".txt":
        return _load_txt(p, freq=freq, start=start, missing=missing)
    pd = _pandas()
    if p.suffix == ".parquet":
        try:
            frame = pd.read_parquet(p)
        except ImportError as err:  # pandas reads parquet with pyarrow (or fastparquet)
            raise missing_extra("pyarrow", extra="parquet", purpose=f"reading {str(p)!r}") from err
    elif p.suffix in (".csv", ".tsv"):
        try:
            frame = pd.read_csv(p, sep="\t" if p.suffix == ".tsv" else ",")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise DataError(f"{str(p)!r} is not a readable CSV file: {' '.join(str(err).split())}") from None
    else:
        raise DataError(f"{str(p)!r}: expected a .csv, .tsv, .parquet or .txt file; got suffix {p.suffix!r}")
    if frame.shape[0] == 0:
        raise DataError(f"{str(p)!r} holds no rows")
    return series_from_frame(frame, time_column=time_column, value_columns=value_columns, freq=freq,
                             aggregate=aggregate, missing=missing, source=str(p), start=start)


def _load_txt(p: Path, *, freq: Optional[str], start: Optional[str], missing: str) -> Series:
    values = []
    for i, line in enumerate(read_text_file(p).splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        try:
            values.append(float(s))
        except ValueError:
            raise DataError(f"{str(p)!r} line {i}: expected one number, got {s[:40]!r}") from None
    if not values:
        raise DataError(f"{str(p)!r} holds no numbers")
    v = np.asarray(values, dtype=np.float64)[:, None]
    times = None
    if start is not None or freq is not None:
        _need_start_and_freq(start, freq, f"{str(p)}: a .txt series")
        pd = _pandas()
        times = pd.date_range(pd.Timestamp(start), periods=len(v), freq=freq).values
    name = p.stem
    return _finish(v, times, freq, [name], missing, [f"{str(p)}: {len(v)} evenly spaced values"
                                                      + (f" from {start} every {freq} (nominal)" if times is not None
                                                         else " (no timestamps)")])


def series_from_frame(frame: Any, *, time_column: Optional[str] = None, value_columns: Optional[Sequence[str]] = None,
                      freq: Optional[str] = None, aggregate: str = "mean", missing: str = "interpolate",
                      source: str = "data", start: Optional[str] = None) -> Series:
    """A pandas DataFrame with a time column and numeric value columns → Series (see load_series).

    A time column of integers (0, 1, 2, ... or any evenly spaced integers) is a step index, not a clock
    (pandas would read it as nanoseconds since 1970): without `start` and `freq` the series has no
    timestamps; with both, index value k is at start + (k − first index)·freq.
    """
    pd = _pandas()
    cols = [str(c) for c in frame.columns]
    frame = frame.copy()
    frame.columns = cols
    time_column = time_column or cols[0]
    if time_column not in cols:
        raise DataError(f"{source}: no time column {time_column!r}; the columns are {cols}")
    if value_columns is None:
        value_columns = [c for c in cols if c != time_column]
        if not value_columns:
            raise DataError(f"{source}: only the time column {time_column!r}; no value columns")
    for c in value_columns:
        if c not in cols:
            raise DataError(f"{source}: no value column {c!r}; the columns are {cols}")
    data = {c: _numeric_column(frame[c], c, source) for c in value_columns}
    report = [f"{source}: {len(frame)} rows; forecasting {_columns_note(list(value_columns), cols, time_column)}"]
    stamps = frame[time_column]
    if pd.api.types.is_numeric_dtype(stamps) and not pd.api.types.is_bool_dtype(stamps):
        index = _step_index(stamps, time_column, source)
        if start is None and freq is None:
            return _indexed_series(pd.DataFrame(data, index=index), time_column, missing, source, report)
        _need_start_and_freq(start, freq, f"{source}: the integer index in {time_column!r}")
        times = pd.date_range(pd.Timestamp(start), periods=int(index.max() - index.min()) + 1, freq=freq)
        report.append(f"integer index in {time_column!r}: index {int(index.min())} is {start}, one step per "
                      f"{freq} (nominal)")
        times = pd.Series(times[(index - index.min()).values])
    else:
        if start is not None:
            raise InputError(f"{source}: --start gives a clock to files without one; column {time_column!r} already "
                             f"holds times (leave out --start)")
        times = _time_column(stamps, time_column, source)
    df = pd.DataFrame(data, index=pd.DatetimeIndex(times.values))
    _check_sorted(df.index, time_column, source)
    df, freq = _on_grid(df, freq, aggregate, time_column, source, report)
    return _finish(df.values.astype(np.float64), df.index.values, freq, [str(c) for c in value_columns], missing,
                   report)


def _columns_note(chosen: List[str], cols: List[str], time_column: str) -> str:
    """Which value columns are used, out of which (so a file with several says what was picked)."""
    others = [c for c in cols if c != time_column]
    if len(others) == 1:
        return f"column {chosen[0]!r}"
    how = "all value columns jointly" if chosen == others else "choose others with --value-columns"
    return f"{', '.join(repr(c) for c in chosen)} of the value columns {others} ({how})"


def _numeric_column(col: Any, name: str, source: str) -> np.ndarray:
    import pandas as pd
    num = pd.to_numeric(col, errors="coerce")
    bad = num.isna() & col.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.values)[0])
        raise DataError(f"{source}: column {name!r} row {row + 1}: value {col.iloc[row]!r} is not numeric")
    return num.astype("float64").values


def _time_column(stamps: Any, time_column: str, source: str) -> Any:
    import pandas as pd
    times = pd.to_datetime(stamps, errors="coerce")
    bad = times.isna() & stamps.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.values)[0])
        raise DataError(f"{source}: column {time_column!r} row {row + 1}: cannot read "
                        f"{stamps.iloc[row]!r} as a time")
    if times.isna().any():
        row = int(np.flatnonzero(times.isna().values)[0])
        raise DataError(f"{source}: column {time_column!r} row {row + 1} is empty")
    return times


def _step_index(stamps: Any, time_column: str, source: str) -> Any:
    """The integers of a numeric time column (a step index); DataError for empty or fractional entries."""
    import pandas as pd
    values = stamps.astype("float64")
    bad = values.isna() | (values != np.round(values))
    if bad.any():
        row = int(np.flatnonzero(bad.values)[0])
        raise DataError(f"{source}: column {time_column!r} holds numbers, not times (row {row + 1}: "
                        f"{stamps.iloc[row]!r}); the first column (or --time-column) must hold times or an "
                        f"integer step index")
    return pd.Index(values.astype(np.int64))


def _check_sorted(index: Any, time_column: str, source: str) -> None:
    if not index.is_monotonic_increasing:
        row = int(np.flatnonzero(np.diff(np.asarray(index).astype("int64")) < 0)[0]) + 1
        raise DataError(f"{source}: column {time_column!r} is not sorted: row {row + 1} "
                        f"({index[row]}) comes after {index[row - 1]}")


def _refuse_duplicates(index: Any, before: str, after: str) -> None:
    """DataError(before + the first repeated index value + after) if the index repeats a value."""
    if index.has_duplicates:
        raise DataError(f"{before}{index[index.duplicated()][0]}{after}")


def _grid_step(index: Any, time_column: str, source: str, hint: str) -> int:
    """The step of a regular grid with gaps (int64 units of the index): the most common interval, of which
    every interval is a multiple (nanoseconds for times); DataError naming the first odd row when there is none."""
    values = np.asarray(index)
    if np.issubdtype(values.dtype, np.datetime64):
        values = values.astype("datetime64[ns]")  # pandas may keep second or microsecond resolution
    d = np.diff(values.astype(np.int64))
    steps, counts = np.unique(d, return_counts=True)
    step = int(steps[np.argmax(counts)])
    if step <= 0 or counts.max() * 2 <= len(d) or np.any(d % step):
        odd = np.flatnonzero(d % step) if step > 0 else np.array([0])
        row = int(odd[0]) + 1 if len(odd) else 1
        raise DataError(f"{source}: the index in {time_column!r} is irregular (e.g. row {row + 1}: {index[row]} "
                        f"after {index[row - 1]}; no step of which every interval is a multiple); {hint}")
    return step


def _indexed_series(df: Any, time_column: str, missing: str, source: str, report: List[str]) -> Series:
    """Values on an integer step index: no timestamps; gaps in the index are missing steps."""
    import pandas as pd
    _check_sorted(df.index, time_column, source)
    _refuse_duplicates(df.index, f"{source}: the integer index in {time_column!r} repeats ",
                       "; give --start and --freq to read it as a clock and aggregate duplicates")
    if len(df) < 2:
        raise DataError(f"{source}: {len(df)} row is too few for a series")
    step = _grid_step(df.index, time_column, source, "give --start and --freq to read it as a clock and resample")
    first, last = int(df.index[0]), int(df.index[-1])
    unix = " (if these are Unix times, convert them to dates first)" if first > 10 ** 8 else ""
    report.append(f"column {time_column!r} holds integers ({first} .. {last}, step {step}): read as a step index, "
                  f"not as times, so no calendar covariates; give --start and --freq for a clock{unix}")
    df = df.reindex(pd.RangeIndex(first, last + 1, step))
    return _finish(df.values.astype(np.float64), None, None, [str(c) for c in df.columns], missing, report)


def _need_start_and_freq(start: Optional[str], freq: Optional[str], what: str) -> None:
    if start is None or freq is None:
        raise InputError(f"{what} gets timestamps only from both --start and --freq; got start={start!r}, "
                         f"freq={freq!r}")


def _on_grid(df: Any, freq: Optional[str], aggregate: str, time_column: str, source: str,
             report: List[str]) -> Tuple[Any, str]:
    """(frame on a regular time grid, its pandas frequency): resampled to `freq`, or on the inferred step."""
    import pandas as pd
    if freq is not None:
        try:
            offset = pd.tseries.frequencies.to_offset(freq)
        except ValueError:
            raise InputError(f"freq {freq!r} is not a pandas frequency (e.g. 'h', '5min', 'D')") from None
        rs = df.resample(offset)
        # an empty bucket is a missing step (sum would make it 0, which is a value, not a gap)
        counts = rs.count()
        df = (rs.sum(min_count=1) if aggregate == "sum" else rs.mean()).where(counts > 0)
        report.append(f"resampled to {freq} ({aggregate} per bucket): {len(df)} steps")
        return df, pd.tseries.frequencies.to_offset(freq).freqstr
    _refuse_duplicates(df.index, f"{source}: column {time_column!r} repeats the time ",
                       "; pass a frequency (--freq) to aggregate duplicates")
    if len(df) < 3:
        raise DataError(f"{source}: {len(df)} rows are too few to infer a frequency; pass --freq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3 announces that infer_freq will return an offset
        inferred = pd.infer_freq(df.index)
    freq = None if inferred is None else pd.tseries.frequencies.to_offset(inferred).freqstr
    if freq is None:  # a regular grid with gaps
        step = _grid_step(df.index, time_column, source, "pass a frequency (--freq) to resample")
        day = 86_400_000_000_000
        freq = f"{step // day}D".replace("1D", "D") if step % day == 0 else \
            pd.tseries.frequencies.to_offset(pd.Timedelta(step)).freqstr
    offset = pd.tseries.frequencies.to_offset(freq)
    df = df.reindex(pd.date_range(df.index[0], df.index[-1], freq=offset))
    return df, offset.freqstr


def _finish(values: np.ndarray, times: Optional[np.ndarray], freq: Optional[str], columns: List[str], missing: str,
            report: List[str]) -> Series:
    observed = ~np.isnan(values)
    counts = {c: int((~observed[:, j]).sum()) for j, c in enumerate(columns)}
    if not observed.any(axis=0).all():
        empty = [c for j, c in enumerate(columns) if not observed[:, j].any()]
        raise DataError(f"column {empty[0]!r} has no values")
    total = sum(counts.values())
    if total:
        longest = max(_longest_run(~observed[:, j]) for j in range(values.shape[1]))
        where = ", ".join(f"{c}: {n}" for c, n in counts.items() if n)
        if missing == "error":
            raise DataError(f"{total} missing steps ({where}; longest gap {longest} steps); choose "
                            f"missing='interpolate' or 'mask'")
        if missing == "interpolate":
            pd = _pandas()
            values = pd.DataFrame(values).interpolate(method="linear", limit_direction="both").values
            report.append(f"missing steps: {where} (longest gap {longest}); filled by linear interpolation")
        else:
            report.append(f"missing steps: {where} (longest gap {longest}); kept as missing and masked")
    else:
        report.append("no missing steps")
    return Series(values, observed, times, freq, columns, counts, report)


def _longest_run(flags: np.ndarray) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def load_kaggle_ipasn(path: PathLike, *, machines: Optional[Sequence[int]] = None, absent: str = "zero",
                      missing: str = "interpolate") -> Series:
    """The Kaggle "Computer Network Traffic" file (cs448b_ipasn.csv: `date,l_ipn,r_asn,f`).

    Each row counts the flows `f` between local machine `l_ipn` and remote ASN
    `r_asn` on `date`. Returned: one daily series per local machine (columns
    "l_ipn=<id>"), flows summed over r_asn, on the full calendar from the first to
    the last date. A machine-day with no row is made explicit: `absent="zero"`
    reads it as 0 flows (the file lists only days with traffic) and reports how
    many there were; `absent="missing"` treats it as unknown and hands it to the
    `missing` policy.
    """
    pd = _pandas()
    if absent not in ("zero", "missing"):
        raise InputError(f"absent must be 'zero' or 'missing'; got {absent!r}")
    p = Path(path)
    if not p.exists():
        raise DataError(f"series file {str(p)!r} does not exist")
    frame = pd.read_csv(p)
    need = ["date", "l_ipn", "r_asn", "f"]
    for c in need:
        if c not in frame.columns:
            raise DataError(f"{str(p)!r}: no column {c!r}; the Kaggle ipasn format has columns {need}, "
                            f"got {list(frame.columns)}")
    for c in ("l_ipn", "r_asn", "f"):
        num = pd.to_numeric(frame[c], errors="coerce")
        if num.isna().any():
            row = int(np.flatnonzero(num.isna().values)[0])
            raise DataError(f"{str(p)!r}: column {c!r} row {row + 1}: value {frame[c].iloc[row]!r} is not numeric")
        frame[c] = num
    dates = pd.to_datetime(frame["date"], errors="coerce")
    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().values)[0])
        raise DataError(f"{str(p)!r}: column 'date' row {row + 1}: cannot read {frame['date'].iloc[row]!r} as a date")
    frame["date"] = dates.dt.normalize()
    if machines is not None:
        frame = frame[frame["l_ipn"].isin(list(machines))]
        if frame.empty:
            raise DataError(f"{str(p)!r}: none of the machines {list(machines)} occur in column 'l_ipn'")
    daily = frame.groupby(["date", "l_ipn"])["f"].sum().unstack("l_ipn")
    days = pd.date_range(daily.index.min(), daily.index.max(), freq="D")
    daily = daily.reindex(days)
    absent_count = int(daily.isna().values.sum())
    report = [f"{str(p)}: {len(frame)} rows, {daily.shape[1]} machines, {len(days)} days; "
              f"{absent_count} machine-days without any row"]
    if absent == "zero":
        daily = daily.fillna(0.0)
        report.append(f"{absent_count} absent machine-days read as 0 flows (absent='zero')")
    columns = [f"l_ipn={int(c)}" for c in daily.columns]
    series = _finish(daily.values.astype(np.float64), daily.index.values, "D", columns,
                     missing if absent == "missing" else "error", report)
    if absent == "zero":
        series.observed[:] = True
    return series
