"""Arrival rates that change over time, and any trace replayed over them.

A :class:`RateProfile` is an arrival rate ``lambda(t)`` in requests per second over ``[0, duration_s]``, linear
between knots ``(times_s[j], rates_rps[j])`` (two knots at the same time make a step).  Its cumulative
intensity ``Lambda(t) = integral_0^t lambda`` is piecewise quadratic, and its inverse is solved exactly,
segment by segment.

:func:`replay_over_profile` gives a trace the profile's shape by the time-rescaling theorem (Brown et al.,
"The time-rescaling theorem and its application to neural spike train data analysis", Neural Computation
2002; Cinlar 1975): if a process has cumulative intensity ``Lambda_src``, then ``u_i = Lambda_src(t_i)`` are the
arrivals of a unit-rate process, and ``t'_i = Lambda^-1(u_i)`` those of a process of intensity ``lambda``.
The requests keep their order and their sizes; only their arrival times move, and the trace's own burstiness
(how arrivals cluster at a given rate) is carried over.  The source's intensity is either taken as constant
(``source_window_s=None``: ``Lambda_src(t) = n t / T``) or estimated as the trace's counts in windows of
``source_window_s`` seconds (linear in between), which first removes the trace's own slow swings (a day/night
cycle, busy days) so that only the profile's shape remains.  The profile's rates are scaled so that it holds
exactly the trace's requests: the profile gives the shape and the duration, the trace the number of requests.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from workbench import checks

HOUR_S = 3_600.0
DAY_S = 86_400.0


@dataclass(frozen=True, eq=False)
class RateProfile:
    """An arrival rate over ``[0, times_s[-1]]``: linear between the knots (``times_s`` non-decreasing, from 0;
    equal times make a step), ``rates_rps >= 0`` and not all zero.  ``name`` says what it is (shown in labels).

    Build one with :meth:`from_knots`, :meth:`from_hourly` (hour-of-day means, smooth or stepwise),
    :meth:`constant`, or :func:`workbench.traces.synthetic.daily_profile` (BurstGPT's published day).
    """

    times_s: np.ndarray
    rates_rps: np.ndarray
    name: str = "rate profile"
    _cumulative: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        times = _knot_array(self.times_s, "times_s", what="seconds")
        if np.ndim(self.rates_rps) == 1 and 0 < np.size(self.rates_rps) != times.size:
            raise ValueError(f"rates_rps: {np.size(self.rates_rps)} rates for {times.size} knot times (times_s); give "
                             "one rate per knot")
        rates = _knot_array(self.rates_rps, "rates_rps", what="requests per second", length=times.size)
        if times.size < 2:
            raise ValueError(f"times_s: a rate profile needs at least two knots (its start and its end), got "
                             f"{times.size}; e.g. RateProfile.constant(rate_rps, duration_s)")
        if times[0] != 0.0:
            raise ValueError(f"times_s[0]: a rate profile starts at 0 s, got {times[0]:g} s")
        back = np.flatnonzero(np.diff(times) < 0)
        if back.size:
            i = int(back[0]) + 1
            raise ValueError(f"times_s[{i}] = {times[i]:g} s is before times_s[{i - 1}] = {times[i - 1]:g} s: knots "
                             "go forward in time (two equal times make a step)")
        if times[-1] <= 0:
            raise ValueError("times_s: the profile lasts 0 s (every knot at 0); give it a duration")
        if not rates.any():
            raise ValueError("rates_rps: every rate is 0, so no request can arrive; give the profile a positive rate")
        checks.instance(self.name, "name", str, expected="a text label")
        times.flags.writeable = False
        rates.flags.writeable = False
        object.__setattr__(self, "times_s", times)
        object.__setattr__(self, "rates_rps", rates)
        cumulative = np.r_[0.0, np.cumsum(0.5 * (rates[1:] + rates[:-1]) * np.diff(times))]
        cumulative.flags.writeable = False
        object.__setattr__(self, "_cumulative", cumulative)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_knots(cls, times_s, rates_rps, name: str = "rate profile") -> RateProfile:
        """A profile linear between ``(times_s[j], rates_rps[j])`` (see the class)."""
        return cls(times_s, rates_rps, name)

    @classmethod
    def constant(cls, rate_rps: float, duration_s: float, name: str | None = None) -> RateProfile:
        """``rate_rps`` over ``[0, duration_s]``."""
        rate = checks.number(rate_rps, "rate_rps", low=0, low_open=True, unit="requests/s")
        duration = checks.number(duration_s, "duration_s", low=0, low_open=True, unit="s")
        return cls(np.array([0.0, duration]), np.array([rate, rate]),
                   name or f"constant {rate:g} requests/s for {duration:g} s")

    @classmethod
    def from_hourly(cls, hourly_rps, *, smooth: bool = True, days: int = 1,
                    name: str = "hourly profile") -> RateProfile:
        """A day from its 24 hour-of-day mean rates (requests per second), repeated ``days`` times.

        ``smooth=False``: a step per hour (each hour at its mean).  ``smooth=True``: linear between knots at
        the middle of each hour, wrapping around midnight, the knots solved so that every hour's mean is its
        given mean exactly (knot ``k_h`` with ``(k_{h-1} + 6 k_h + k_{h+1}) / 8 = mean_h``, cyclically); refused
        when a knot would be negative (a swing too sharp for linear pieces: use ``smooth=False``).
        """
        if not isinstance(hourly_rps, (str, bytes)) and np.ndim(hourly_rps) == 1 and np.size(hourly_rps) != 24:
            raise ValueError(f"hourly_rps: must have 24 values, one mean rate (requests/s) per hour of the day from "
                             f"00:00, got {np.size(hourly_rps)}" + ("" if np.size(hourly_rps) else " (empty)"))
        means = _non_negative(checks.array(hourly_rps, "hourly_rps", length=24, what="requests per second"),
                              "hourly_rps", "an hour's mean arrival rate is >= 0 (0 for an idle hour)")
        days = checks.integer(days, "days", low=1, high=100_000)
        if not means.any():
            raise ValueError("hourly_rps: every hour's rate is 0, so no request can arrive")
        if not smooth:
            edges = np.arange(24 * days + 1, dtype=np.float64) * HOUR_S
            times = np.repeat(edges, 2)[1:-1]
            rates = np.repeat(np.tile(means, days), 2)
            return cls(times, rates, name)
        circulant = (6 * np.eye(24) + np.roll(np.eye(24), 1, axis=1) + np.roll(np.eye(24), -1, axis=1)) / 8
        knots = np.linalg.solve(circulant, means)
        knots[np.abs(knots) < 1e-12 * means.max()] = 0.0
        if knots.min() < 0:
            h = int(np.argmin(knots))
            raise ValueError(f"hourly_rps: a smooth profile through these means needs a negative rate at "
                             f"{h}:30 ({knots[h]:.3g} requests/s): the swing around hour {h} is too sharp for "
                             "linear pieces; pass smooth=False for a step per hour")
        midnight = 0.5 * (knots[0] + knots[-1])
        day_times = np.r_[0.0, (np.arange(24) + 0.5) * HOUR_S]
        times = np.r_[np.concatenate([day_times + d * DAY_S for d in range(days)]), days * DAY_S]
        rates = np.r_[np.tile(np.r_[midnight, knots], days), midnight]
        return cls(times, rates, name)

    # ------------------------------------------------------------------ what it is
    @property
    def duration_s(self) -> float:
        return float(self.times_s[-1])

    @property
    def total(self) -> float:
        """Expected requests over the whole profile, ``Lambda(duration_s)``."""
        return float(self._cumulative[-1])

    @property
    def mean_rate_rps(self) -> float:
        return self.total / self.duration_s

    @property
    def peak_rps(self) -> float:
        return float(self.rates_rps.max())

    @property
    def trough_rps(self) -> float:
        return float(self.rates_rps.min())

    @property
    def peak_to_trough(self) -> float:
        """Highest rate over lowest (inf when the rate touches 0)."""
        return self.peak_rps / self.trough_rps if self.trough_rps > 0 else math.inf

    @property
    def fingerprint(self) -> str:
        digest = hashlib.blake2b(digest_size=8)
        for array in (self.times_s, self.rates_rps):
            digest.update(np.ascontiguousarray(array).view(np.uint8))
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (f"RateProfile({self.name!r}, {self.duration_s:g} s, mean {self.mean_rate_rps:.4g} requests/s, "
                f"peak/trough {self.peak_to_trough:.3g})")

    def scaled(self, factor: float) -> RateProfile:
        """Every rate times ``factor`` (> 0)."""
        factor = checks.number(factor, "factor", low=0, low_open=True)
        return RateProfile(self.times_s, self.rates_rps * factor, self.name)

    def with_total(self, total: float) -> RateProfile:
        """The same shape, scaled to hold ``total`` requests over its duration."""
        total = checks.number(total, "total", low=0, low_open=True, unit="requests")
        return self.scaled(total / self.total)

    # ------------------------------------------------------------------ as a function of time
    def rate_at(self, t_s) -> np.ndarray:
        """``lambda(t)`` (right-continuous at a step; 0 outside the profile)."""
        t = np.asarray(t_s, dtype=np.float64)
        # side="right": at a step (two equal knot times) the value after it
        j = np.clip(np.searchsorted(self.times_s, t, side="right") - 1, 0, self.times_s.size - 2)
        t0, t1 = self.times_s[j], self.times_s[j + 1]
        r0, r1 = self.rates_rps[j], self.rates_rps[j + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(t1 > t0, (r1 - r0) / np.where(t1 > t0, t1 - t0, 1.0), 0.0)
        rate = r0 + slope * (t - t0)
        return np.where((t < 0) | (t > self.duration_s), 0.0, rate)

    def cumulative(self, t_s) -> np.ndarray:
        """``Lambda(t)``: expected arrivals in ``[0, t]`` (``t`` clipped to the profile)."""
        t = np.clip(np.asarray(t_s, dtype=np.float64), 0.0, self.duration_s)
        j = np.clip(np.searchsorted(self.times_s, t, side="right") - 1, 0, self.times_s.size - 2)
        t0, t1 = self.times_s[j], self.times_s[j + 1]
        r0, r1 = self.rates_rps[j], self.rates_rps[j + 1]
        tau = t - t0
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(t1 > t0, (r1 - r0) / np.where(t1 > t0, t1 - t0, 1.0), 0.0)
        return self._cumulative[j] + r0 * tau + 0.5 * slope * tau * tau

    def inverse(self, u) -> np.ndarray:
        """The earliest ``t`` with ``Lambda(t) = u``, for ``0 <= u <= total`` (exact: each piece's quadratic)."""
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, self.total)
        # the piece holding u: the last knot whose cumulative is below u (u = 0 -> the first piece)
        j = np.clip(np.searchsorted(self._cumulative, u, side="left") - 1, 0, self.times_s.size - 2)
        t0, t1 = self.times_s[j], self.times_s[j + 1]
        r0, r1 = self.rates_rps[j], self.rates_rps[j + 1]
        du = np.maximum(u - self._cumulative[j], 0.0)
        length = t1 - t0
        with np.errstate(invalid="ignore", divide="ignore"):
            half_slope = np.where(length > 0, 0.5 * (r1 - r0) / np.where(length > 0, length, 1.0), 0.0)
            # r0 tau + half_slope tau^2 = du, in the form without cancellation
            root = np.sqrt(np.maximum(r0 * r0 + 4.0 * half_slope * du, 0.0))
            denominator = r0 + root
            tau = np.where(denominator > 0, 2.0 * du / np.where(denominator > 0, denominator, 1.0), 0.0)
        return np.minimum(t0 + np.clip(tau, 0.0, length), self.duration_s)

    def mean_rates(self, interval_s: float = HOUR_S) -> np.ndarray:
        """Mean rate over each consecutive ``interval_s`` (the last one may be shorter)."""
        interval_s = checks.number(interval_s, "interval_s", low=0, low_open=True, unit="s")
        edges = np.r_[np.arange(0.0, self.duration_s, interval_s), self.duration_s]
        return np.diff(self.cumulative(edges)) / np.diff(edges)

    def peak_rates(self, interval_s: float = HOUR_S) -> np.ndarray:
        """Highest rate within each consecutive ``interval_s`` (a linear profile peaks at a knot or an end)."""
        interval_s = checks.number(interval_s, "interval_s", low=0, low_open=True, unit="s")
        edges = np.r_[np.arange(0.0, self.duration_s, interval_s), self.duration_s]
        # the rate just after each start and just before each end, and every knot strictly inside
        peaks = np.maximum(self.rate_at(edges[:-1]), self.rate_at(np.nextafter(edges[1:], 0)))
        inside = np.searchsorted(edges, self.times_s, side="right") - 1
        for j, k in enumerate(inside):
            if 0 <= k < peaks.size and self.times_s[j] != edges[k]:
                peaks[k] = max(peaks[k], self.rates_rps[j])
        return peaks


def _knot_array(values, name: str, *, what: str, length: int | None = None) -> np.ndarray:
    if isinstance(values, (str, bytes)) or np.ndim(values) == 0:
        raise checks.InvalidType(f"{name}: must be an array (or list) of numbers ({what}), got {values!r}")
    if np.size(values) == 0:
        raise ValueError(f"{name}: empty; a rate profile needs at least two knots, e.g. "
                         "RateProfile.constant(rate_rps, duration_s)")
    array = checks.array(values, name, length=length, what=what).copy()
    fix = ("a knot's time is seconds from the profile's start (0)" if name == "times_s" else
           "an arrival rate is >= 0 (0 for a pause)")
    return _non_negative(array, name, fix)


def _non_negative(values: np.ndarray, name: str, fix: str) -> np.ndarray:
    """``values``, refused at the first negative one with ``fix`` (what the number is, what to give)."""
    below = np.flatnonzero(values < 0)
    if below.size:
        i = int(below[0])
        raise ValueError(f"{name}[{i}] = {values[i]:g} is negative: {fix}; correct it"
                         + (f" ({below.size} negative values in all)" if below.size > 1 else ""))
    return values


def source_intensity(arrival_s: np.ndarray, window_s: float | None) -> np.ndarray:
    """``u_i = Lambda_src(t_i)``: each arrival's place on a unit-rate clock, from the trace's own intensity:
    constant over its span (``window_s=None``), or its counts per window of ``window_s`` seconds (the last
    window ends at the last arrival), linear within a window (``Lambda_src`` at a window's end is the arrivals
    before it)."""
    t = np.asarray(arrival_s, dtype=np.float64)
    n = t.size
    span = float(t[-1] - t[0]) if n else 0.0
    if n < 2 or span <= 0:
        return np.zeros(n)
    t = t - t[0]
    if window_s is None:
        return t * (n / span)
    window_s = checks.number(window_s, "source_window_s", low=0, low_open=True, unit="s")
    windows = max(1, math.ceil(span / window_s))
    edges = np.r_[np.arange(windows, dtype=np.float64) * window_s, span]   # the last window ends with the trace
    counts = np.bincount(np.minimum((t // window_s).astype(np.int64), windows - 1), minlength=windows)
    at_edges = np.r_[0.0, np.cumsum(counts, dtype=np.float64)]
    return np.interp(t, edges, at_edges)


def replay_over_profile(trace, profile: RateProfile, *, source_window_s: float | None = None):
    """``trace``'s requests, in order and with their sizes, at arrival times that follow ``profile``'s shape
    over its duration (scaled to hold exactly ``len(trace)`` requests): ``t'_i = Lambda^-1(Lambda_src(t_i))``
    (see the module docstring).  ``source_window_s``: estimate the trace's own intensity over windows of this
    many seconds of its clock (removing its slow swings), else take it as constant.  The new trace's
    ``meta.options`` record the profile (name, fingerprint, duration) and the window."""
    from workbench.traces.trace import Trace

    checks.instance(trace, "trace", Trace, expected="a workbench.Trace (wb.load_trace, wb.Trace.from_arrays)")
    checks.instance(profile, "profile", RateProfile,
                    expected="a RateProfile (RateProfile.from_hourly, RateProfile.constant, synthetic.daily_profile)")
    if len(trace) == 0:
        raise ValueError("trace is empty: nothing to replay")
    scaled = profile.with_total(float(len(trace)))
    units = source_intensity(trace.arrival_s, source_window_s)
    if units.size and units[-1] > 0:
        units *= len(trace) / units[-1]   # the last arrival at the profile's end, as with a constant intensity
    arrival_s = scaled.inverse(units)
    if arrival_s.size:
        arrival_s = np.maximum.accumulate(arrival_s - arrival_s[0])   # float rounding never reorders
    return trace.retimed(arrival_s, rate_profile=profile.name, rate_profile_fingerprint=profile.fingerprint,
                         rate_profile_duration_s=profile.duration_s, source_window_s=source_window_s)
