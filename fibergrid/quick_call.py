"""The common call of a signature that recurs, in a few steps.

A call through `Function.call` checks its arguments one numpy attribute at a time, looks its
signature up, takes a lane, binds, copies, submits and collects: some twenty Python-level steps.
Right after a kernel has swept the caches (mlp_b1 streams 7.4 MB of weights per call) each costs
~1 us: ~35 us a call, more than numpy spends around its own three GEMVs. The common case (arrays
of the declared dtypes and shapes, up to QUICK_COPY_BYTES each) needs only this: per input a
shape check and a copy (`casting="no"`: another dtype raises instead of casting), the lane's
prepared device call (`Device.prepare_call`), per result a copy out. Anything else is a miss,
with nothing left half done: the general path takes the call (and says what is wrong, if
anything). (Copies compiled with numba were no faster, and cost seconds of compile per dtype
and rank.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fibergrid.module import _Lane, _Prepared

QUICK_AFTER = 2  # general-path calls of a signature before it gets a quick call
# The largest input or result a quick call copies. The general path binds arrays of 64 KiB and
# up in place (`Device.rebind`), which the quick call does not; copying them instead still won
# up to here (same-process A/B on local-sync, quick/general time: avg_pool's 64 KiB input 0.755,
# data_movement's 64 + 69 KiB 0.872, mlp_b64's 196 KiB 1.0), not past it (conv2d's 784 KiB in
# and out 1.037).
QUICK_COPY_BYTES = 256 * 1024

_ndarray, _copyto = np.ndarray, np.copyto  # (a module global is one lookup; np.copyto is two)


class QuickCall:
    """`quick(args, out)`: the results of `function(*args, out=out)` run on `lane` of
    `prepared`, or None where the call is not the common case (the caller takes the general
    path)."""

    def __init__(self, prepared: "_Prepared", lane: "_Lane") -> None:
        self.prepared = prepared
        self.lane = lane
        by_index = sorted(lane.inputs, key=lambda i: i[0])
        self._inputs = [(view.shape, view) for _, _, view, _ in by_index]  # per argument, in order
        self._results = [(view.shape, view) for _, view, _ in lane.results]
        self._call = lane.call
        self._buffers = [buffer for _, buffer, _, _ in lane.inputs] + [buffer for buffer, _, _ in lane.results]

    @classmethod
    def of(cls, prepared: "_Prepared") -> "QuickCall | None":
        """A quick call on the prepared signature's first lane, where no argument or result is
        over QUICK_COPY_BYTES and the program reads every argument."""
        lane = prepared._lanes[0]
        if lane.command_buffer is None or any(view.nbytes > QUICK_COPY_BYTES for _, _, view, _ in lane.inputs) \
                or any(view.nbytes > QUICK_COPY_BYTES for _, view, _ in lane.results):
            return None
        if sorted(index for index, *_ in lane.inputs) != list(range(len(lane.inputs))):
            return None  # an argument the program never reads is still checked by the general path
        return cls(prepared, lane)

    def __call__(self, args: tuple, out: Any) -> np.ndarray | tuple[np.ndarray, ...] | None:
        if len(args) != len(self._inputs):
            return None
        prepared = self.prepared
        try:
            lane = prepared._free.pop()
        except IndexError:
            return None
        if lane is not self.lane:  # (another lane, made by submit: the general path's)
            prepared._release(lane)
            return None
        try:
            for (shape, view), arg in zip(self._inputs, args):
                if type(arg) is not _ndarray or arg.shape != shape:
                    prepared._release(lane)
                    return None
                _copyto(view, arg, casting="no")
        except TypeError:  # another dtype
            prepared._release(lane)
            return None
        lane.submissions += 1
        try:
            if lane.rebound:  # the general path has bound the caller's arrays in place since
                for buffer in self._buffers:
                    lane.bind(prepared._device, buffer, None)
            self._call(lane.submissions)
        except BaseException:
            prepared._replace(lane)
            raise
        results = tuple([view.copy() for _, view in self._results]) if out is None else self._copy_out(out)
        prepared._release(lane)
        if results is None:
            return None
        return results[0] if len(results) == 1 else results

    def _copy_out(self, out: Any) -> tuple[np.ndarray, ...] | None:
        """The `out` arrays, the results copied into them; None for `out` the general path
        would refuse (it runs the call again there, and raises)."""
        try:
            outs = (out,) if type(out) is _ndarray else tuple(out)
            if len(outs) != len(self._results):
                return None
            for (shape, view), o in zip(self._results, outs):
                if not isinstance(o, _ndarray) or o.shape != shape:
                    return None
                _copyto(o, view, casting="no")
        except (TypeError, ValueError):  # not a sequence; another dtype; read-only
            return None
        return outs
