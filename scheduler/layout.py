"""Where every shared word lives: the layout of the scheduler's arena and of a grid program.

All scheduler state is one int64 numpy array (the *arena*) so that compiled code takes a single
base address and the host pays for one argument per call. Offsets are in int64 words; words that
different workers write often start their own 64-byte cache line (8 words).

A *grid program* is what a command buffer becomes at `end()`: an int64 array of commands,
CMD_WORDS each, and an int64 array of regions, REGION_WORDS each (first command, end command,
and the region's measured work, which the wake policy reads). The commands
of a region may run in any order or at once; region r+1 starts when every tile of region r is done.
"""

LINE = 8  # int64 words per cache line

# --- arena header ---------------------------------------------------------------------------------
H_SHUTDOWN = 0
H_WORKERS = 1  # participants: the worker threads plus one host participant (index H_WORKERS - 1)
H_SLOT_CAP = 2  # slots the chunk table can address (MAX_SLOT_CHUNKS * SLOT_CHUNK)
H_SEM_CAP = 3
H_SPIN_NS = 4  # how long an idle worker spins before parking
H_TRACE = 5  # 1 while tracing is on
H_TRACE_ADDR = 6  # base of the trace rings
H_TRACE_CAP = 7  # events per worker ring
H_WAKE = 8  # futex word idle workers park on; bumped whenever work is published
H_SLEEPERS = 9  # workers parked (or about to park) on H_WAKE
H_WGSTATE_ADDR = 10  # per-participant WorkgroupState (64-byte stride)
H_DEQUES = 11  # word offsets of the tables below, fixed at creation
H_READY = 12
H_SLOT_CHUNKS = 13  # table of MAX_SLOT_CHUNKS chunk base addresses (0: not allocated yet)
H_SEMS = 14
H_SLOT_HIGH = 15  # slots [0, H_SLOT_HIGH) have ever been used: the range scans cover
H_PENDING = 16  # submissions parked on semaphores (skip the scan when 0)
H_THREADS = 17  # worker threads (the wake policy never wakes more)
H_WAKE_COST_NS = 18  # the wake policy's price of one wake: configured, or the measured latency
H_WAKE_MEASURE = 19  # 1: H_WAKE_COST_NS follows the measured wake latency
H_WAKE_T0 = 20  # when the last wake was issued (CLOCK_MONOTONIC ns), for the latency measurement
H_HOST = 21  # 1 while a host thread is the host participant
H_READY_CAP = 22  # ready-queue cells (a power of two >= H_SLOT_CAP: the queue never fills)
H_WAKING = 23  # workers woken and not yet running: participants already committed to published work
H_ACTIVE = 24  # participants inside help_slot (own line: every help session hits it)
H_BUSY_SPIN_NS = 25  # how long an idle participant spins while submissions run (more regions come)
H_RUNNING = 26  # submissions released and not yet complete
H_SPINNING = 27  # idle participants spinning for work: they take a shard without a wake
H_QUIET_SINCE_NS = 28  # when H_RUNNING last fell to 0: an idle participant's H_SPIN_NS counts from there
H_QUIET_GAP_NS = 29  # how long the device stays quiet before its next submission runs (a running average)
H_READY_HEAD = 32  # ready queue: consumers CAS the head
H_READY_TAIL = 40  # producers CAS the tail
HEADER_WORDS = 48

# --- per-participant block: deque ends and counters -------------------------------------------------
W_TOP = 0  # deque top: stealers CAS it
W_BOTTOM = LINE  # deque bottom: only the owner writes it
W_WORKGROUPS = 2 * LINE  # counters, written by the owner only
W_STEALS = W_WORKGROUPS + 1
W_PARKS = W_WORKGROUPS + 2
W_SPINS = W_WORKGROUPS + 3
W_REGIONS = W_WORKGROUPS + 4
W_SUBMISSIONS = W_WORKGROUPS + 5
W_TRACE_COUNT = W_WORKGROUPS + 6
W_WAKES = W_WORKGROUPS + 7  # returns from a park that found work published meanwhile
W_WAKE_NS = W_WORKGROUPS + 8  # sum of their wake latencies (wake issued -> running again)
W_PARKED_NS = W_WORKGROUPS + 9  # time spent parked
W_BUSY_NS = W_WORKGROUPS + 10  # time spent inside help_slot (running or claiming tiles)
W_SPIN_NS = W_WORKGROUPS + 11  # time spent spinning for work before parking
WORKER_WORDS = 4 * LINE
COUNTER_NAMES = ("workgroups", "steals", "parks", "spins", "regions", "submissions", "trace_events",
                 "wakes", "wake_ns", "parked_ns", "busy_ns", "spin_ns")

DEQUE_CAP = 256  # shards per deque (a power of two); a full deque drops optional shards only

# Submission slots live in chunks allocated as submissions need them, so the number in flight
# is bounded by memory (MAX_SLOT_CHUNKS * SLOT_CHUNK), not by a size fixed at creation.
SLOT_CHUNK = 1024
SLOT_CHUNK_SHIFT = 10
MAX_SLOT_CHUNKS = 64
READY_CELL_WORDS = 2  # (sequence, slot) per ready-queue cell (Vyukov's bounded MPMC queue)

# --- submission slots -------------------------------------------------------------------------------
S_CLAIM = 0  # (generation << CLAIM_SHIFT) | next tile of the current region
S_TOTAL = 1  # tiles in the current region
S_REGION = 2  # current region index
S_STATE = 3
S_PROGRAM = 4  # address of the command array
S_N_REGIONS = 5
S_REGIONS = 6  # address of the region array
S_TILES = 7  # address of per-submission scratch: resolved tiles per command, then their prefix
S_REMAINING = LINE  # tiles of the current region not finished yet (own line: every tile hits it)
S_WAITS = LINE + 1  # address of (semaphore, value) pairs
S_N_WAITS = LINE + 2
S_SIGNALS = LINE + 3
S_N_SIGNALS = LINE + 4
S_DEADLINE_NS = LINE + 5  # CLOCK_MONOTONIC ns after which a loop in the program stops going round (0: never)
S_ERROR = LINE + 6  # first failure's status, 0 while healthy
S_SERIAL = LINE + 7  # the submission's host serial number, for traces
S_FAIL_PROGRAM = 2 * LINE  # command buffer id of the first failure (C_PROGRAM)
S_FAIL_CMD = 2 * LINE + 1  # its command index (C_INDEX)
S_FAIL_WG = 2 * LINE + 2  # its workgroup, packed (x | y << 21 | z << 42)
S_N_CMDS = 2 * LINE + 3
S_RESERVATION = 2 * LINE + 4  # tiles claimed at once in the current region
S_QUEUED = 2 * LINE + 5  # 1 while the ready queue holds an entry for this slot
S_LEARN = 2 * LINE + 6  # 1 while the current region's work is being timed (R_SAMPLES < LEARN_SAMPLES)
S_RETIRED = 2 * LINE + 7  # 0 from submit until the completer is done with the slot (reusable again)
S_WORK_NS = 3 * LINE  # work timed in the current region, summed over participants (own line)
SLOT_WORDS = 4 * LINE

MAX_TIMEPOINTS = 64  # waits, and signals, per submission

CLAIM_SHIFT = 40
CLAIM_MASK = (1 << CLAIM_SHIFT) - 1

FREE, PENDING, READY, DONE, FAILED, RESERVED = 0, 1, 2, 3, 4, 5

# --- semaphores ---------------------------------------------------------------------------------------
M_PAYLOAD = 0
M_EPOCH = 1  # futex word host waiters sleep on; bumped on every signal and failure
M_WAITERS = 2
M_STATE = 3  # SEM_OK, SEM_FAILING (a failer is writing the details) or SEM_FAILED
M_FAIL_PROGRAM = 4
M_FAIL_CMD = 5
M_FAIL_WG = 6
M_FAIL_STATUS = 7
SEM_OK, SEM_FAILING, SEM_FAILED = 0, 1, 2
SEM_WORDS = LINE

# Failure statuses that are not a kernel's own return value.
STATUS_HOST_FAILED = -1000  # semaphore.fail() from the host
STATUS_INDIRECT_RANGE = -1001  # dispatch_indirect read a workgroup count outside the limits
STATUS_ABORTED = -1002  # the device shut down with the work in flight
STATUS_CANCELLED = -1003  # a loop in the submission went round while a semaphore it signals had failed
STATUS_DEADLINE = -1004  # a loop in the submission went round past the submission's deadline

# --- grid program regions: REGION_WORDS per region -----------------------------------------------------
R_FIRST, R_END = 0, 1  # commands [first, end)
R_WORK_NS = 2  # measured work of the region (ns summed over participants), once R_SAMPLES > 0: the least of
#   its timed runs (a run beside a noisy neighbour takes longer, and an estimate it inflated would
#   have the wake policy pay a wake on every later call of a small region)
R_SAMPLES = 3  # how many runs were timed
REGION_WORDS = 4
LEARN_SAMPLES = 3  # a reusable program times its first runs, then runs untimed

# --- grid program commands ------------------------------------------------------------------------------
OP_DISPATCH, OP_FILL, OP_COPY, OP_JUMP = 1, 2, 3, 4
# A JUMP is a region of its own (no tiles): when the region before it completes, the next region
# is region + C_JUMP_DELTA if the predicate matches (or there is none), else the one after it.
# The delta is relative, so programs concatenated into one submission keep their jumps.
C_OP = 0
C_FN = 1  # DISPATCH: kernel address; FILL/COPY: destination address; JUMP: predicate address or 0
C_STATE = 2  # DISPATCH: DispatchState address; COPY: source address; FILL: pattern; JUMP: the
#              value the predicate must equal (compared in the predicate's width)
C_COUNT = 3  # DISPATCH: workgroup count x, y, z at 3, 4, 5; FILL/COPY: length in bytes at 3;
#              JUMP: the predicate's width in bytes (1, 2, 4 or 8)
C_PATTERN_LEN = 4  # FILL: 1, 2 or 4 bytes
C_TILES = 6  # static tile count (DISPATCH: x*y*z; FILL/COPY: ceil(length / TILE_BYTES))
C_INDIRECT = 7  # DISPATCH: address of the uint32[3] workgroup count, or 0
C_MAX_COUNT = 8  # DISPATCH: per-dimension limit checked on an indirect count
C_INDEX = 9  # the command's index in its command buffer
C_PROGRAM = 10  # id of the command buffer the command came from
C_JUMP_DELTA = 11  # JUMP: target region minus the jump's own region
CMD_WORDS = 12

TRANSFER_TILE_BYTES = 64 * 1024

# The DispatchState of hal/abi.py as the scheduler sees it (it imports nothing from hal/): its
# size, and where begin_region writes an indirect dispatch's workgroup count.
DISPATCH_STATE_BYTES = 56
DISPATCH_STATE_WORKGROUP_COUNT = 12  # fills and copies are split into tiles of this size

# --- trace events (per-worker rings) ---------------------------------------------------------------------
T_SERIAL, T_CMD, T_FIRST, T_END, T_START_NS, T_END_NS = range(6)
TRACE_WORDS = 8

WG_PACK_BITS = 21


def ready_cells(slot_cap: int) -> int:
    return 1 << max(0, (slot_cap - 1).bit_length())


def table_offsets(participants: int, sems: int) -> dict[int, int]:
    """Word offset of each table, keyed by the header word that records it."""
    deques = HEADER_WORDS + participants * WORKER_WORDS
    ready = deques + participants * DEQUE_CAP
    chunks = ready + READY_CELL_WORDS * ready_cells(MAX_SLOT_CHUNKS * SLOT_CHUNK)
    return {H_DEQUES: deques, H_READY: ready, H_SLOT_CHUNKS: chunks, H_SEMS: chunks + MAX_SLOT_CHUNKS}


def arena_words(participants: int, sems: int) -> int:
    return table_offsets(participants, sems)[H_SEMS] + sems * SEM_WORDS
