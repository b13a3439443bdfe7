// softmax-xp: the fused row kernels of the CuPy fast path (_fast/cupy.py).
//
// Compiled by CuPy's RawModule (NVRTC) one instantiation at a time:
//     sxp_rows<TIn, TOut, R, KIND>
// TIn: the input's storage type; TOut: the output's; R: the type a narrowing
// dtype= rounds the input to first (none_t: none; softmax_xp._call.input_rounding);
// KIND: SXP_SOFTMAX, SXP_LOG_SOFTMAX or SXP_LOGSUMEXP. The compute type A is
// float, or double for float64 outputs.
//
// tests/_cuda_twin.py runs the SAME algorithm in NumPy (same block size, same
// per-thread chunks, same merge order, same formulas); each function here
// names its twin there ("twin: ..."), and the twin's names are these.
//
// No header is included (cuda_fp16.h / cuda_bf16.h are not on NVRTC's default
// path everywhere): half and bfloat16 are 16-bit structs converted with inline
// PTX, and inf / NaN are built from bit patterns (NVRTC has no INFINITY / NAN).
//
// One block of SXP_BLOCK threads per row (a row: one slice along the reduced
// axis, addressed as x[o * xs_o + j * xs_n + i * xs_i] for row = o * inner + i,
// j < n). The row is read in tiles of SXP_TILE = SXP_BLOCK * SXP_ITEMS
// entries; thread tid holds entries base + tid + q * SXP_BLOCK, q < SXP_ITEMS,
// of each tile (coalesced along a contiguous row). Rows of at most one tile are
// read once and written from registers; longer rows merge each tile's state
// into a running one (one read), then read again to write.

#define SXP_BLOCK 256
#define SXP_ITEMS 16
#define SXP_WARPS (SXP_BLOCK / 32)
#define SXP_TILE (SXP_BLOCK * SXP_ITEMS)

#define SXP_SOFTMAX 0
#define SXP_LOG_SOFTMAX 1
#define SXP_LOGSUMEXP 2

// storage types that are not C types (16-bit patterns), and "no rounding"
struct half_s { unsigned short bits; };
struct bf16_s { unsigned short bits; };
struct none_t {};

// --- special values, math of the compute type A ------------------------------

template <class A> struct Lim;
template <> struct Lim<float> {
    static __device__ __forceinline__ float inf() { return __int_as_float(0x7f800000); }
    static __device__ __forceinline__ float nan() { return __int_as_float(0x7fc00000); }
};
template <> struct Lim<double> {
    static __device__ __forceinline__ double inf() {
        return __longlong_as_double(0x7ff0000000000000LL);
    }
    static __device__ __forceinline__ double nan() {
        return __longlong_as_double(0x7ff8000000000000LL);
    }
};

__device__ __forceinline__ float sxp_exp(float v) { return expf(v); }
__device__ __forceinline__ double sxp_exp(double v) { return exp(v); }
__device__ __forceinline__ float sxp_log(float v) { return logf(v); }
__device__ __forceinline__ double sxp_log(double v) { return log(v); }
__device__ __forceinline__ float sxp_log1p(float v) { return log1pf(v); }
__device__ __forceinline__ double sxp_log1p(double v) { return log1p(v); }
__device__ __forceinline__ bool sxp_isnan(float v) { return v != v; }
__device__ __forceinline__ bool sxp_isnan(double v) { return v != v; }
__device__ __forceinline__ bool sxp_finite(float v) { return fabsf(v) < Lim<float>::inf(); }
__device__ __forceinline__ bool sxp_finite(double v) { return fabs(v) < Lim<double>::inf(); }

// --- 16-bit conversions (inline PTX; IEEE round to nearest even, inf on overflow)

__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ unsigned short f64_to_f16(double d) {
    unsigned short h;
    asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(d));
    return h;
}
__device__ __forceinline__ float bf16_to_f32(unsigned short b) {
    return __int_as_float(((unsigned int)b) << 16);  // exact: bf16 is float's top half
}
__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));  // sm_80 and later
    return h;
}

// --- loading: the input in the compute type A (twin: load_values) ------------
// A floating input is widened exactly (half, bfloat16 -> float), rounded once
// to R when dtype= narrows, then widened to A. An integer or bool input is
// converted to A first (as the generic core's astype), then rounded to R.

template <class R> struct Rnd;  // the value rounded to R, as float or double
template <> struct Rnd<none_t> {
    template <class S> static __device__ __forceinline__ S go(S s) { return s; }
};
template <> struct Rnd<float> {
    template <class S> static __device__ __forceinline__ float go(S s) { return (float)s; }
};
template <> struct Rnd<half_s> {
    static __device__ __forceinline__ float go(float s) { return f16_to_f32(f32_to_f16(s)); }
    static __device__ __forceinline__ float go(double s) { return f16_to_f32(f64_to_f16(s)); }
};
template <> struct Rnd<bf16_s> {  // from float only: double -> bfloat16 falls back
    static __device__ __forceinline__ float go(float s) { return bf16_to_f32(f32_to_bf16(s)); }
};

template <class A, class R, class T> struct Load {  // integers and bool
    static __device__ __forceinline__ A go(T v) { return (A)Rnd<R>::go((A)v); }
};
template <class A, class R> struct Load<A, R, half_s> {
    static __device__ __forceinline__ A go(half_s v) { return (A)Rnd<R>::go(f16_to_f32(v.bits)); }
};
template <class A, class R> struct Load<A, R, bf16_s> {
    static __device__ __forceinline__ A go(bf16_s v) { return (A)Rnd<R>::go(bf16_to_f32(v.bits)); }
};
template <class A, class R> struct Load<A, R, float> {
    static __device__ __forceinline__ A go(float v) { return (A)Rnd<R>::go(v); }
};
template <class A, class R> struct Load<A, R, double> {
    static __device__ __forceinline__ A go(double v) { return (A)Rnd<R>::go(v); }
};

// --- storing: rounded once to the output type ---------------------------------

template <class A> struct AccOf { typedef float type; };
template <> struct AccOf<double> { typedef double type; };

__device__ __forceinline__ void sxp_store(float* p, float v) { *p = v; }
__device__ __forceinline__ void sxp_store(double* p, double v) { *p = v; }
__device__ __forceinline__ void sxp_store(half_s* p, float v) { p->bits = f32_to_f16(v); }
__device__ __forceinline__ void sxp_store(bf16_s* p, float v) { p->bits = f32_to_bf16(v); }

// --- the row's state and its merge (twin: State, merge) -----------------------
// m: the maximum of the finite and -inf entries (-inf: none yet); r: the sum of
// exp(z - m) over them all but ONE occurrence of m (ties count 1 each, exactly);
// nan: whether an unmasked entry is NaN; k: how many are +inf.

template <class A> struct State {
    A m;
    A r;
    int nan;
    int k;
};

template <class A> __device__ __forceinline__ State<A> sxp_empty() {
    State<A> s;
    s.m = -Lim<A>::inf();
    s.r = 0;
    s.nan = 0;
    s.k = 0;
    return s;
}

// (m1, r1) + (m2, r2) with m1 >= m2 is (m1, r1 + (1 + r2) * exp(m2 - m1)); on a
// tie ``a`` (the caller's own state) comes first; an m = -inf side adds nothing.
template <class A> __device__ __forceinline__ State<A> sxp_merge(State<A> a, State<A> b) {
    State<A> hi = a, lo = b;
    if (b.m > a.m) {
        hi = b;
        lo = a;
    }
    State<A> out = hi;
    out.nan = a.nan | b.nan;
    out.k = a.k + b.k;
    if (lo.m != -Lim<A>::inf()) {
        out.r = hi.r + ((A)1 + lo.r) * sxp_exp(lo.m - hi.m);
    }
    return out;
}

// --- one thread's chunk of a tile (twin: chunk_state) -------------------------
// z: the chunk's values, -inf where masked or beyond the row.

template <class A> __device__ __forceinline__ State<A> sxp_chunk(const A (&z)[SXP_ITEMS]) {
    State<A> s = sxp_empty<A>();
    const A inf = Lim<A>::inf();
#pragma unroll
    for (int q = 0; q < SXP_ITEMS; ++q) {
        if (sxp_isnan(z[q])) {
            s.nan = 1;
        } else if (z[q] == inf) {
            s.k += 1;
        } else if (z[q] > s.m) {
            s.m = z[q];
        }
    }
    if (s.m != -inf) {
        int ties = 0;
#pragma unroll
        for (int q = 0; q < SXP_ITEMS; ++q) {
            if (z[q] == s.m) {
                ties += 1;
            } else if (z[q] < s.m) {
                s.r += sxp_exp(z[q] - s.m);
            }
        }
        s.r += (A)(ties - 1);
    }
    return s;
}

// --- a tile's values (twin: load_values) ---------------------------------------
// z = x (softmin: -x), divided by the temperature where finite, -inf where
// masked or beyond the row; bit q of ``off`` says that entry q takes no part.

template <class A> struct Row {
    int n;  // < 2**31 (the launcher's condition)
    long long xs_n;
    const unsigned char* w;  // the mask, or null
    long long ws_n;
    const A* t;  // the temperature array, or null
    long long ts_n;
    A t_scalar;
    int t_mode;  // 0: none, 1: t_scalar, 2: t
    int negate;
};

template <class A, class R, class TIn>
__device__ __forceinline__ void sxp_load_tile(
    const TIn* __restrict__ x, const Row<A>& row, int base, A (&z)[SXP_ITEMS],
    unsigned int& off) {
    off = 0;
#pragma unroll
    for (int q = 0; q < SXP_ITEMS; ++q) {
        const int j = base + threadIdx.x + q * SXP_BLOCK;
        A v = -Lim<A>::inf();
        if (j < row.n && (row.w == 0 || row.w[(long long)j * row.ws_n] != 0)) {
            v = Load<A, R, TIn>::go(x[(long long)j * row.xs_n]);
            if (row.negate) {
                v = -v;
            }
            if (row.t_mode != 0 && sxp_finite(v)) {
                v = v / (row.t_mode == 1 ? row.t_scalar : row.t[(long long)j * row.ts_n]);
            }
        } else {
            off |= 1u << q;
        }
        z[q] = v;
    }
}

// --- the block's reduction (twin: block_reduce) --------------------------------
// A shuffle-down tree in each warp (offsets 16, 8, 4, 2, 1: lane l merges lane
// l + offset into its own), the warps' results through shared memory, and the
// same tree over them in warp 0 (offsets SXP_WARPS / 2 ... 1). Every thread
// gets the row's state.

template <class A> __device__ __forceinline__ State<A> sxp_shfl_down(State<A> s, int offset) {
    s.m = __shfl_down_sync(0xffffffffu, s.m, offset);
    s.r = __shfl_down_sync(0xffffffffu, s.r, offset);
    s.nan = __shfl_down_sync(0xffffffffu, s.nan, offset);
    s.k = __shfl_down_sync(0xffffffffu, s.k, offset);
    return s;
}

template <class A> __device__ __forceinline__ State<A> sxp_block_reduce(State<A> s) {
    __shared__ A sm[SXP_WARPS];
    __shared__ A sr[SXP_WARPS];
    __shared__ int sn[SXP_WARPS];
    __shared__ int sk[SXP_WARPS];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        s = sxp_merge(s, sxp_shfl_down(s, offset));
    }
    if (lane == 0) {
        sm[warp] = s.m;
        sr[warp] = s.r;
        sn[warp] = s.nan;
        sk[warp] = s.k;
    }
    __syncthreads();
    if (warp == 0) {
        s = sxp_empty<A>();
        if (lane < SXP_WARPS) {
            s.m = sm[lane];
            s.r = sr[lane];
            s.nan = sn[lane];
            s.k = sk[lane];
        }
#pragma unroll
        for (int offset = SXP_WARPS / 2; offset > 0; offset >>= 1) {
            s = sxp_merge(s, sxp_shfl_down(s, offset));
        }
        if (lane == 0) {
            sm[0] = s.m;
            sr[0] = s.r;
            sn[0] = s.nan;
            sk[0] = s.k;
        }
    }
    __syncthreads();
    s.m = sm[0];
    s.r = sr[0];
    s.nan = sn[0];
    s.k = sk[0];
    return s;
}

// --- the results (twin: finish_entries, finish_row) ----------------------------

template <int KIND, class A>
__device__ __forceinline__ A sxp_entry(A z, bool off, const State<A>& s, A c) {
    // c: softmax 1 / (1 + r) (normal rows) or 1 / k (+inf rows); log_softmax
    // log1p(r) or -log(k). A multiplication, not a division per entry: IEEE
    // division calls a slow-path subroutine, and its register saves spilled.
    const A inf = Lim<A>::inf();
    if (KIND == SXP_SOFTMAX) {
        if (off) return (A)0;
        if (s.nan) return Lim<A>::nan();
        if (s.k > 0) return z == inf ? c : (A)0;
        if (s.m == -inf) return (A)0;
        return sxp_exp(z - s.m) * c;
    } else {
        if (off) return -inf;
        if (s.nan) return Lim<A>::nan();
        if (s.k > 0) return z == inf ? c : -inf;
        if (s.m == -inf) return -inf;
        return (z - s.m) - c;
    }
}

template <int KIND, class A> __device__ __forceinline__ A sxp_row_constant(const State<A>& s) {
    if (KIND == SXP_SOFTMAX) {
        return s.k > 0 ? (A)1 / (A)s.k : (A)1 / ((A)1 + s.r);
    }
    return s.k > 0 ? -sxp_log((A)s.k) : sxp_log1p(s.r);
}

template <class A> __device__ __forceinline__ A sxp_lse(const State<A>& s) {
    if (s.nan) return Lim<A>::nan();
    if (s.k > 0) return Lim<A>::inf();
    if (s.m == -Lim<A>::inf()) return s.m;
    return s.m + sxp_log1p(s.r);
}

// --- the kernel (twin: rows) ---------------------------------------------------
// Strides are in elements; a broadcast mask or temperature has stride 0 along
// its broadcast axes. y is C-contiguous: softmax and log_softmax write
// y[(o * n + j) * inner + i], logsumexp writes y[row].

template <class TIn, class TOut, class R, int KIND>
__global__ void __launch_bounds__(SXP_BLOCK, 1) sxp_rows(
    const TIn* __restrict__ x, TOut* __restrict__ y, int n, long long inner,
    long long xs_o, long long xs_n, long long xs_i, const unsigned char* __restrict__ w,
    long long ws_o, long long ws_n, long long ws_i,
    const typename AccOf<TOut>::type* __restrict__ t, long long ts_o, long long ts_n,
    long long ts_i, typename AccOf<TOut>::type t_scalar, int t_mode, int negate) {
    typedef typename AccOf<TOut>::type A;
    const long long rid = blockIdx.x;
    const long long o = rid / inner;
    const long long i = rid - o * inner;
    x += o * xs_o + i * xs_i;
    Row<A> row;
    row.n = n;
    row.xs_n = xs_n;
    row.w = w == 0 ? w : w + (o * ws_o + i * ws_i);
    row.ws_n = ws_n;
    row.t = t == 0 ? t : t + (o * ts_o + i * ts_i);
    row.ts_n = ts_n;
    row.t_scalar = t_scalar;
    row.t_mode = t_mode;
    row.negate = negate;

    // the pair of each thread's chunks (a row of one tile: its one chunk, since
    // merging into the empty state changes nothing), kept in registers
    A z[SXP_ITEMS];
    unsigned int off = 0;
    State<A> s = sxp_empty<A>();
    for (int base = 0; base < n; base += SXP_TILE) {
        sxp_load_tile<A, R, TIn>(x, row, base, z, off);
        s = sxp_merge(s, sxp_chunk<A>(z));
    }
    s = sxp_block_reduce<A>(s);

    if (KIND == SXP_LOGSUMEXP) {
        if (threadIdx.x == 0) sxp_store(y + rid, sxp_lse<A>(s));
        return;
    }
    const A c = sxp_row_constant<KIND, A>(s);
    y += o * n * inner + i;
    for (int base = 0; base < n; base += SXP_TILE) {
        if (n > SXP_TILE) sxp_load_tile<A, R, TIn>(x, row, base, z, off);
#pragma unroll
        for (int q = 0; q < SXP_ITEMS; ++q) {
            const int j = base + threadIdx.x + q * SXP_BLOCK;
            if (j < n) sxp_store(y + (long long)j * inner, sxp_entry<KIND, A>(z[q], (off >> q) & 1u, s, c));
        }
    }
}
