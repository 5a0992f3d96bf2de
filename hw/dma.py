"""AXI4 master DMA engines: a burst reader, a burst writer and a read-port arbiter.

Rules (``docs/core.md``, "DMA rules"):

* **Whole aligned beats.** A transfer is ``beats`` full-width beats from a beat-aligned address (the low
  ``log2(data_width / 8)`` address bits are ignored). Sub-beat operands (2-byte aligned A/B, 4-byte aligned C
  rows) are the business of the client: it reads the covering beats and picks its lanes, and it writes
  partial beats with byte strobes (``wstrb`` comes with every write beat).
* **Bursts.** INCR, ``awsize``/``arsize`` = full width, at most ``max_burst`` beats (default 256, the AXI4
  limit) and never crossing a 4 KiB boundary. A new burst is issued as soon as the previous address was
  accepted; read data is passed through with ``rready`` = the consumer's ``ready``.
* **Errors.** A SLVERR/DECERR (``resp[1]``) on any R beat or B response is reported, never hangs: the slave
  still delivers every beat of every burst, the reader passes them all on (``error`` sticky within the
  transfer, so the last beat tells the whole story), and the writer finishes its bursts and reports ``error``
  in its completion.
* **One ID.** All transactions use ID 0, so responses come back in order; ``rlast``/``rid``/``bid`` are not
  needed to track bursts (beats and responses are counted).
* **Pipelined transfers.** The reader takes a new request once every burst address of the previous one is out
  (up to ``transfers`` in flight); the writer once the previous one's last beat is out (up to ``bursts``
  bursts awaiting B), with completions queued in order.
* **Zero-beat requests** complete without an AXI transaction (the reader then sends no data beat; the writer
  queues a completion in order).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

__all__ = [
    "AXI_OKAY", "AXI_SLVERR", "AXI_DECERR", "BURST_INCR",
    "axi4_read_signature", "axi4_write_signature", "request_layout", "read_beat_layout", "write_beat_layout",
    "write_done_layout", "DMAReader", "DMAWriter", "ReadArbiter",
]

AXI_OKAY = 0
AXI_SLVERR = 2
AXI_DECERR = 3
BURST_INCR = 1
#: Bytes of the address-boundary AXI4 bursts must not cross.
PAGE_BYTES = 4096


def _check_widths(addr_width: int, data_width: int, id_width: int = 1) -> None:
    if data_width not in (32, 64, 128, 256, 512, 1024):
        raise ValueError(f"data_width must be a power of two between 32 and 1024, not {data_width!r}")
    if not isinstance(addr_width, int) or not 13 <= addr_width <= 64:
        raise ValueError(f"addr_width must be an integer between 13 and 64, not {addr_width!r}")
    if not isinstance(id_width, int) or not 1 <= id_width <= 16:
        raise ValueError(f"id_width must be an integer between 1 and 16, not {id_width!r}")


def axi4_read_signature(addr_width: int, data_width: int, id_width: int = 1) -> wiring.Signature:
    """AR and R channels of an AXI4 master (names as in the AXI spec, lower case, without a prefix)."""
    _check_widths(addr_width, data_width, id_width)
    return wiring.Signature({
        "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2),
        "arlock": Out(1), "arcache": Out(4), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
        "rready": Out(1),
    })


def axi4_write_signature(addr_width: int, data_width: int, id_width: int = 1) -> wiring.Signature:
    """AW, W and B channels of an AXI4 master."""
    _check_widths(addr_width, data_width, id_width)
    return wiring.Signature({
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2),
        "awlock": Out(1), "awcache": Out(4), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1), "wvalid": Out(1),
        "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    })


def request_layout(addr_width: int, beats_width: int) -> data.StructLayout:
    """A transfer: beat-aligned byte address and number of full-width beats."""
    return data.StructLayout({"addr": addr_width, "beats": beats_width})


def read_beat_layout(data_width: int) -> data.StructLayout:
    """One beat of read data: ``last`` marks the transfer's final beat, ``error`` is sticky within it."""
    return data.StructLayout({"data": data_width, "last": 1, "error": 1})


def write_beat_layout(data_width: int) -> data.StructLayout:
    """One beat of write data with its byte strobes."""
    return data.StructLayout({"data": data_width, "strb": data_width // 8})


def write_done_layout() -> data.StructLayout:
    """Completion of a write transfer: ``error`` if any B response was SLVERR/DECERR."""
    return data.StructLayout({"error": 1})


class _BurstMixin:
    """Parameters and the burst-length rule shared by reader and writer."""

    def _init_params(self, addr_width: int, data_width: int, beats_width: int, max_burst: int) -> None:
        _check_widths(addr_width, data_width)
        if not isinstance(max_burst, int) or max_burst < 1 or max_burst > 256 or max_burst & (max_burst - 1):
            raise ValueError(f"max_burst must be a power of two between 1 and 256, not {max_burst!r}")
        if not isinstance(beats_width, int) or not 1 <= beats_width <= addr_width:
            raise ValueError(f"beats_width must be an integer between 1 and addr_width ({addr_width}), "
                             f"not {beats_width!r}")
        self._addr_width = addr_width
        self._data_width = data_width
        self._beats_width = beats_width
        self._max_burst = max_burst
        self._beat_shift = exact_log2(data_width // 8)
        #: beats in one 4 KiB page
        self._page_beats = PAGE_BYTES >> self._beat_shift

    @property
    def addr_width(self) -> int:
        return self._addr_width

    @property
    def data_width(self) -> int:
        return self._data_width

    @property
    def beats_width(self) -> int:
        return self._beats_width

    @property
    def max_burst(self) -> int:
        return self._max_burst

    def _burst_beats(self, m: Module, addr: Signal, remaining: Signal, name: str) -> Signal:
        """Beats of the next burst: min(remaining, max_burst, beats left in the 4 KiB page of ``addr``)."""
        limit = min(self._max_burst, self._page_beats)
        page_bits = exact_log2(self._page_beats)
        in_page = addr[self._beat_shift:self._beat_shift + page_bits] if page_bits else Const(0, 1)
        to_page = Signal(range(self._page_beats + 1), name=f"{name}_to_page")
        m.d.comb += to_page.eq(self._page_beats - in_page)
        cap = Signal(range(limit + 1), name=f"{name}_cap")
        m.d.comb += cap.eq(Mux(to_page < limit, to_page, limit))
        burst = Signal(range(limit + 1), name=f"{name}_beats")
        m.d.comb += burst.eq(Mux(remaining < cap, remaining, cap))
        return burst


class DMAReader(_BurstMixin, wiring.Component):
    """Reads ``beats`` full-width beats from device memory and streams them out (see the module docstring).

    Transfers are pipelined: a new request is accepted as soon as every burst address of the previous one has
    been issued, up to ``transfers`` transfers in flight (their lengths wait in a FIFO for the R side), so
    short transfers (one row of an operand) do not each pay the memory latency.

    Parameters
    ----------
    addr_width, data_width : int
        AXI address and data widths.
    beats_width : int
        Width of the ``beats`` field of a request.
    max_burst : int
        Longest burst in beats (a power of two up to 256).
    transfers : int
        Transfers in flight (requests accepted whose last beat has not been delivered).

    Raises
    ------
    ValueError
        For widths, a burst length or a transfer count outside the supported ranges.
    """

    def __init__(self, addr_width: int = 64, data_width: int = 512, *, beats_width: int = 32,
                 max_burst: int = 256, transfers: int = 4) -> None:
        self._init_params(addr_width, data_width, beats_width, max_burst)
        if not isinstance(transfers, int) or not 1 <= transfers <= 64:
            raise ValueError(f"transfers must be an integer between 1 and 64, not {transfers!r}")
        self._transfers = transfers
        super().__init__({
            "req": In(stream.Signature(request_layout(addr_width, beats_width))),
            "data": Out(stream.Signature(read_beat_layout(data_width))),
            "axi": Out(axi4_read_signature(addr_width, data_width)),
            "busy": Out(1),
        })

    @property
    def transfers(self) -> int:
        return self._transfers

    def elaborate(self, platform) -> Module:
        m = Module()
        shift = self._beat_shift
        ar_addr = Signal(self._addr_width, name="ar_addr")
        ar_left = Signal(self._beats_width, name="ar_left")
        r_count = Signal(self._beats_width, name="r_count")
        error = Signal(name="error_sticky")
        burst = self._burst_beats(m, ar_addr, ar_left, "ar")
        m.submodules.lengths = lengths = fifo.SyncFIFOBuffered(width=self._beats_width, depth=self._transfers)

        m.d.comb += [
            self.req.ready.eq((ar_left == 0) & lengths.w_rdy),
            self.busy.eq((ar_left != 0) | lengths.r_rdy),
            lengths.w_data.eq(self.req.p.beats),
            lengths.w_en.eq(self.req.valid & self.req.ready & (self.req.p.beats != 0)),
        ]
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += [ar_addr.eq(self.req.p.addr >> shift << shift), ar_left.eq(self.req.p.beats)]

        axi = self.axi
        m.d.comb += [
            axi.arid.eq(0), axi.araddr.eq(ar_addr), axi.arlen.eq(burst - 1), axi.arsize.eq(shift),
            axi.arburst.eq(BURST_INCR), axi.arlock.eq(0), axi.arcache.eq(0b0011), axi.arprot.eq(0),
            axi.arvalid.eq(ar_left != 0),
        ]
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [ar_addr.eq(ar_addr + (burst << shift)), ar_left.eq(ar_left - burst)]

        bad = axi.rresp[1]
        last = r_count == lengths.r_data - 1
        m.d.comb += [
            self.data.valid.eq(axi.rvalid & lengths.r_rdy),
            self.data.p.data.eq(axi.rdata),
            self.data.p.last.eq(last),
            self.data.p.error.eq(error | bad),
            axi.rready.eq(self.data.ready & lengths.r_rdy),
        ]
        with m.If(self.data.valid & self.data.ready):
            with m.If(last):
                m.d.comb += lengths.r_en.eq(1)
                m.d.sync += [r_count.eq(0), error.eq(0)]
            with m.Else():
                m.d.sync += [r_count.eq(r_count + 1), error.eq(error | bad)]
        return m


class DMAWriter(_BurstMixin, wiring.Component):
    """Writes ``beats`` beats of ``data`` (with byte strobes) to device memory in bursts.

    Each burst is address first, then its beats. Transfers are pipelined: the next request is taken as soon as
    the previous one's last beat is out, with up to ``bursts`` bursts awaiting their B response. Responses are
    counted per transfer (they come back in order), and when a transfer's last response is in, ``done``
    carries ``error`` (any SLVERR/DECERR); completions queue in order until taken.

    Parameters
    ----------
    addr_width, data_width, beats_width, max_burst
        As for :class:`DMAReader`.
    bursts : int
        Bursts in flight without a B response (also the depth of the completion queue).

    Raises
    ------
    ValueError
        For widths, a burst length or a burst count outside the supported ranges.
    """

    def __init__(self, addr_width: int = 64, data_width: int = 512, *, beats_width: int = 32,
                 max_burst: int = 256, bursts: int = 8) -> None:
        self._init_params(addr_width, data_width, beats_width, max_burst)
        if not isinstance(bursts, int) or not 1 <= bursts <= 64:
            raise ValueError(f"bursts must be an integer between 1 and 64, not {bursts!r}")
        self._bursts = bursts
        super().__init__({
            "req": In(stream.Signature(request_layout(addr_width, beats_width))),
            "data": In(stream.Signature(write_beat_layout(data_width))),
            "done": Out(stream.Signature(write_done_layout())),
            "axi": Out(axi4_write_signature(addr_width, data_width)),
            "busy": Out(1),
        })

    @property
    def bursts(self) -> int:
        return self._bursts

    def elaborate(self, platform) -> Module:
        m = Module()
        shift = self._beat_shift
        limit = min(self._max_burst, self._page_beats)
        addr = Signal(self._addr_width, name="aw_addr")
        left = Signal(self._beats_width, name="aw_left")
        w_left = Signal(range(limit + 1), name="w_left")
        burst = self._burst_beats(m, addr, left, "aw")
        axi = self.axi
        # one entry per burst (or per zero-beat transfer): is it the transfer's last, does it expect a response
        m.submodules.inflight = inflight = fifo.SyncFIFOBuffered(width=2, depth=self._bursts)
        m.submodules.completions = completions = fifo.SyncFIFOBuffered(width=1, depth=self._bursts)

        m.d.comb += [
            axi.awid.eq(0), axi.awaddr.eq(addr), axi.awlen.eq(burst - 1), axi.awsize.eq(shift),
            axi.awburst.eq(BURST_INCR), axi.awlock.eq(0), axi.awcache.eq(0b0011), axi.awprot.eq(0),
            axi.wdata.eq(self.data.p.data), axi.wstrb.eq(self.data.p.strb), axi.wlast.eq(w_left == 1),
        ]

        with m.FSM(name="writer") as fsm:
            with m.State("IDLE"):
                with m.If(self.req.valid & (self.req.p.beats == 0)):
                    # nothing to write: a completion without a response, in order with the others
                    m.d.comb += [self.req.ready.eq(inflight.w_rdy), inflight.w_en.eq(inflight.w_rdy),
                                 inflight.w_data.eq(0b11)]
                with m.Else():
                    m.d.comb += self.req.ready.eq(1)
                    with m.If(self.req.valid):
                        m.d.sync += [addr.eq(self.req.p.addr >> shift << shift), left.eq(self.req.p.beats)]
                        m.next = "ADDRESS"
            with m.State("ADDRESS"):
                m.d.comb += [self.busy.eq(1), axi.awvalid.eq(inflight.w_rdy)]
                with m.If(axi.awvalid & axi.awready):
                    m.d.comb += [inflight.w_en.eq(1), inflight.w_data.eq(left == burst)]
                    m.d.sync += [addr.eq(addr + (burst << shift)), left.eq(left - burst), w_left.eq(burst)]
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.data.valid & axi.wready):
                    m.d.sync += w_left.eq(w_left - 1)
                    with m.If((w_left == 1) & (left == 0)):
                        m.next = "IDLE"
                    with m.Elif(w_left == 1):
                        m.next = "ADDRESS"

        # W outside the FSM's case statement: a plain assignment is defined from time 0 in every simulator
        # (Icarus never runs an `always @*` whose inputs do not change, which left wvalid X before the first write)
        in_data = fsm.ongoing("DATA")
        m.d.comb += [axi.wvalid.eq(in_data & self.data.valid), self.data.ready.eq(in_data & axi.wready)]

        # responses: pop one entry per B (or at once for a zero-beat transfer), complete on a transfer's last
        error = Signal(name="error_sticky")
        last_burst = inflight.r_data[0]
        no_response = inflight.r_data[1]
        m.d.comb += [
            axi.bready.eq(inflight.r_rdy & ~no_response & completions.w_rdy),
            completions.w_data.eq(error | (axi.bresp[1] & ~no_response)),
        ]
        take = Signal(name="response_take")
        m.d.comb += take.eq(inflight.r_rdy & completions.w_rdy & (no_response | axi.bvalid))
        with m.If(take):
            m.d.comb += [inflight.r_en.eq(1), completions.w_en.eq(last_burst)]
            m.d.sync += error.eq(Mux(last_burst, 0, error | axi.bresp[1]))
        m.d.comb += [
            self.done.valid.eq(completions.r_rdy),
            self.done.p.error.eq(completions.r_data),
            completions.r_en.eq(self.done.ready),
        ]
        with m.If(inflight.r_rdy | completions.r_rdy):
            m.d.comb += self.busy.eq(1)
        return m


class ReadArbiter(wiring.Component):
    """Shares one :class:`DMAReader` among ``clients`` readers, whole transfers at a time.

    A request goes out from the lowest-numbered client with one (fixed priority: in SAT the clients never
    compete, since the command processor fetches a descriptor only while the engine is idle); the client's
    number is queued, and read beats go to the client at the head of that queue until its ``last`` beat, so
    transfers of several clients may be in flight and every client sees only its own beats.

    Parameters
    ----------
    clients : int
        Number of client ports ``client0 .. client<n-1>`` (each a ``req`` / ``data`` pair).
    addr_width, data_width, beats_width : int
        As for :class:`DMAReader`.
    transfers : int
        Transfers in flight (at least the reader's ``transfers``).

    Raises
    ------
    ValueError
        For fewer than one or more than 8 clients, or a transfer count outside 1..64.
    """

    def __init__(self, clients: int, addr_width: int = 64, data_width: int = 512, *, beats_width: int = 32,
                 transfers: int = 4) -> None:
        if not isinstance(clients, int) or not 1 <= clients <= 8:
            raise ValueError(f"clients must be an integer between 1 and 8, not {clients!r}")
        if not isinstance(transfers, int) or not 1 <= transfers <= 64:
            raise ValueError(f"transfers must be an integer between 1 and 64, not {transfers!r}")
        _check_widths(addr_width, data_width)
        self._clients = clients
        self._transfers = transfers
        req = stream.Signature(request_layout(addr_width, beats_width))
        beat = stream.Signature(read_beat_layout(data_width))
        members = {"req": Out(req), "data": In(beat)}
        for i in range(clients):
            members[f"client{i}_req"] = In(req)
            members[f"client{i}_data"] = Out(beat)
        super().__init__(members)

    @property
    def clients(self) -> int:
        return self._clients

    def client(self, i: int) -> tuple[stream.Interface, stream.Interface]:
        """The ``(req, data)`` pair of client ``i``."""
        return getattr(self, f"client{i}_req"), getattr(self, f"client{i}_data")

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self._clients
        width = max(1, (n - 1).bit_length())
        m.submodules.grants = grants = fifo.SyncFIFOBuffered(width=width, depth=self._transfers)
        pick = Signal(range(n), name="pick")
        for i in reversed(range(n)):
            with m.If(self.client(i)[0].valid):
                m.d.comb += pick.eq(i)
        with m.Switch(pick):
            for i in range(n):
                req, _ = self.client(i)
                with m.Case(i):
                    m.d.comb += [
                        self.req.valid.eq(req.valid & grants.w_rdy),
                        self.req.p.eq(req.p),
                        req.ready.eq(self.req.ready & grants.w_rdy),
                    ]
        m.d.comb += [
            grants.w_data.eq(pick),
            grants.w_en.eq(self.req.valid & self.req.ready & (self.req.p.beats != 0)),
        ]
        head = grants.r_data
        for i in range(n):
            _, beat = self.client(i)
            m.d.comb += [
                beat.p.eq(self.data.p),
                beat.valid.eq(self.data.valid & grants.r_rdy & (head == i)),
            ]
            with m.If(grants.r_rdy & (head == i)):
                m.d.comb += self.data.ready.eq(beat.ready)
        m.d.comb += grants.r_en.eq(self.data.valid & self.data.ready & self.data.p.last)
        return m
