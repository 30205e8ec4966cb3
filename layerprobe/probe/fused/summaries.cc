// LayerprobeSummaries: every per-batch summary of one layer's output in one pass over the tensor.
//
// Input x: (batch, positions, units) float32, contiguous. Deterministic whatever the thread count and
// the load: the examples are cut into blocks of a fixed size (kBlockValues, from the shape alone); each
// block keeps its own floating-point state (per-unit shifted sums in double, L2 norms, spatial sums)
// and the blocks merge in block order at the end (Chan's formula for the moments). Only what is exact in
// any order (extremes, counts, the sketch histogram) is kept per worker shard, so the threads change
// which shard holds a block, never a rounding. Semantics are those of graph_stats' TensorFlow path (its
// masked branch, which equals the all-finite branch on finite batches): NaN and Inf are counted and left out of the
// per-unit moments, extremes, active counts, L2 norms and spatial sums; denormals count as zeros
// (TensorFlow's CPU kernels flush them); the sketch slot of every value is its float32 bits shifted.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/threadpool.h"

using namespace tensorflow;  // NOLINT

REGISTER_OP("LayerprobeSummaries")
    .Input("x: float")  // (batch, positions, units)
    .Attr("shift: int")
    .Attr("sketch_size: int")
    .Attr("active_threshold: float")
    .Attr("saturation_hi: float = 0")  // values >= this count as saturated ...
    .Attr("saturation_lo: float = 0")  // ... and values <= this
    .Attr("saturation: bool = false")
    .Attr("spatial: bool = false")
    .Output("unit_count: float")
    .Output("unit_sum: float")
    .Output("unit_m2: float")
    .Output("unit_max: float")
    .Output("unit_min: float")
    .Output("unit_active: float")
    .Output("l2_sum: float")
    .Output("nans: float")
    .Output("infs: float")
    .Output("saturated: float")
    .Output("spatial_sum: float")  // (positions * units), or (0) without `spatial`
    .Output("sketch: int32")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
      shape_inference::DimensionHandle units = c->Dim(x, 2);
      for (int i = 0; i < 6; ++i) c->set_output(i, c->Vector(units));
      for (int i = 6; i < 10; ++i) c->set_output(i, c->Scalar());
      bool spatial;
      TF_RETURN_IF_ERROR(c->GetAttr("spatial", &spatial));
      shape_inference::DimensionHandle cells = c->MakeDim(0);
      if (spatial) TF_RETURN_IF_ERROR(c->Multiply(c->Dim(x, 1), units, &cells));
      c->set_output(10, c->Vector(cells));
      int64_t size;
      TF_RETURN_IF_ERROR(c->GetAttr("sketch_size", &size));
      c->set_output(11, c->Vector(size));
      return OkStatus();
    });

namespace {

constexpr uint32_t kExponent = 0x7F800000u;
constexpr int kZeroLanes = 8;  // +0.0 goes to one of 8 spare counters: no store-to-load chain on ReLU zeros
constexpr int64_t kBlock = 1024;  // values whose sketch slots are computed at once
constexpr int kWidth = 8;         // units per register block
// Values per block of examples (1 MB of float32): a block is at least one example. Fixed, so the sums'
// order depends on the shape only; large enough that a block's merge (O(units), O(positions * units)
// with spatial sums) is small against its pass, small enough that a batch of conv activations still
// makes several blocks for the threads (the benchmark's conv1, 256 x 16,384 values: 16 blocks).
constexpr int64_t kBlockValues = int64_t{1} << 18;

// The floating-point state of one block of examples: merged in block order, never per thread.
struct Moments {
  std::vector<double> shift, sum, sq, spatial;  // per unit: sums of (x - shift) and of its square
  std::vector<int32_t> nonfinite;               // per unit
  double l2 = 0;
  int64_t values = 0;  // per unit, finite or not
};

// What is exact in any order: one per worker shard of blocks.
struct Tally {
  std::vector<float> max, min;
  std::vector<int32_t> active, hist;  // hist: sketch_size slots, then kZeroLanes counters of +0.0
  int64_t nans = 0, infs = 0, saturated = 0;
};

struct Params {
  float threshold, hi, lo;  // active above threshold; saturated at or above hi, at or below lo
  uint32_t shift, spare;    // sketch slot = bits >> shift; spare = the first +0.0 counter
};

uint32_t Bits(const float* v) {
  uint32_t bits;
  std::memcpy(&bits, v, 4);
  return bits;
}

// Every value of row[0, n) into its sketch slot, bits >> shift; +0.0 into the spare counters.
void Sketch(const float* row, int64_t n, const Params& c, int32_t* hist) {
  uint32_t slots[kBlock + 16];  // + one vector of slack for the packed stores
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = std::min<int64_t>(kBlock, n - start);
    int64_t i = 0, packed = 0;
#if defined(__AVX512F__)
    const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(c.shift));
    for (; i + 16 <= len; i += 16) {
      const __m512i bits = _mm512_loadu_si512(row + start + i);
      const __mmask16 nonzero = _mm512_test_epi32_mask(bits, bits);
      // compress in a register, then a plain store: a compressing store to memory is microcoded on Zen 4
      _mm512_storeu_si512(slots + packed, _mm512_maskz_compress_epi32(nonzero, _mm512_srl_epi32(bits, shift)));
      packed += __builtin_popcount(nonzero);
    }
    hist[c.spare] += static_cast<int32_t>(i - packed);  // the +0.0 among the first i values
#endif
#pragma omp simd
    for (int64_t j = i; j < len; ++j) {
      const uint32_t bits = Bits(row + start + j);
      const uint32_t zero = 0u - static_cast<uint32_t>(bits == 0);
      slots[packed + j - i] = (bits >> c.shift) | (zero & (c.spare + static_cast<uint32_t>(j & (kZeroLanes - 1))));
    }
    packed += len - i;
    for (int64_t j = 0; j < packed; ++j) ++hist[slots[j]];
  }
}

// Units [u0, u0 + kWidth) of an example without NaN or Inf: the accumulators stay in registers across
// the positions (each position reads kWidth contiguous floats). Returns the sum of squares.
template <bool kSaturation, bool kSpatial>
double Block(const float* row, int64_t positions, int64_t units, int64_t u0, const Params& c, Moments* p, Tally* t) {
  double s[kWidth], s2[kWidth], shift[kWidth], l2[kWidth];
  float hi[kWidth], lo[kWidth];
  int32_t active[kWidth], saturated[kWidth];
  for (int j = 0; j < kWidth; ++j) {
    s[j] = s2[j] = l2[j] = 0;
    shift[j] = p->shift[u0 + j];
    hi[j] = t->max[u0 + j];
    lo[j] = t->min[u0 + j];
    active[j] = saturated[j] = 0;
  }
  for (int64_t q = 0; q < positions; ++q) {
    const float* __restrict r = row + q * units + u0;
    double* __restrict cell = p->spatial.data() + (kSpatial ? q * units + u0 : 0);
#pragma omp simd
    for (int j = 0; j < kWidth; ++j) {
      const float v = (Bits(r + j) & kExponent) != 0 ? r[j] : 0.0f;  // denormals count as zeros
      const double d = static_cast<double>(v) - shift[j];
      s[j] += d;
      s2[j] += d * d;
      hi[j] = hi[j] < v ? v : hi[j];
      lo[j] = v < lo[j] ? v : lo[j];
      active[j] += v > c.threshold;
      l2[j] += static_cast<double>(v) * v;
      if (kSpatial) cell[j] += v;
      if (kSaturation) saturated[j] += (v >= c.hi) | (v <= c.lo);
    }
  }
  double total = 0;
  for (int j = 0; j < kWidth; ++j) {
    p->sum[u0 + j] += s[j];
    p->sq[u0 + j] += s2[j];
    t->max[u0 + j] = hi[j];
    t->min[u0 + j] = lo[j];
    t->active[u0 + j] += active[j];
    t->saturated += saturated[j];
    total += l2[j];
  }
  return total;
}

// One example (positions, units) into its block's moments p and its shard's tally t. kClean: the example
// holds no NaN or Inf, so no masks are needed. The per-unit loops have no branches and no scatter: the
// compiler vectorises them.
template <bool kClean, bool kSaturation, bool kSpatial>
void Example(const float* row, int64_t positions, int64_t units, const Params& c, Moments* p, Tally* t) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  double l2 = 0;
  int64_t u0 = 0;  // units below u0 are done in register blocks
  if (kClean) {
    for (; u0 + kWidth <= units; u0 += kWidth) l2 += Block<kSaturation, kSpatial>(row, positions, units, u0, c, p, t);
  }
  double* __restrict sum = p->sum.data();
  double* __restrict sq = p->sq.data();
  const double* __restrict shift = p->shift.data();
  float* __restrict mx = t->max.data();
  float* __restrict mn = t->min.data();
  int32_t* __restrict nonfinite = p->nonfinite.data();
  int32_t* __restrict active = t->active.data();
  int64_t nans = 0, infs = 0, saturated = 0;
  for (int64_t q = 0; u0 < units && q < positions; ++q) {  // the units left (all, for NaN or Inf)
    const float* __restrict r = row + q * units;
    double* __restrict cell = p->spatial.data() + (kSpatial ? q * units : 0);
#pragma omp simd reduction(+ : l2, nans, infs, saturated)
    for (int64_t u = u0; u < units; ++u) {
      const uint32_t bits = Bits(r + u);
      const uint32_t exponent = bits & kExponent;
      const bool finite = kClean || exponent != kExponent;
      const float flushed = exponent != 0 ? r[u] : 0.0f;  // denormals count as zeros, as on TF's CPU
      const float v = finite ? flushed : 0.0f;              // NaN and Inf out of the moments
      if (!kClean) {
        const bool mantissa = (bits & 0x007FFFFFu) != 0;
        nans += (!finite) & mantissa;
        infs += (!finite) & !mantissa;
        nonfinite[u] += !finite;
      }
      const double centred = static_cast<double>(v) - shift[u];
      const double d = finite ? centred : 0.0;
      sum[u] += d;
      sq[u] += d * d;
      const float vmax = finite ? v : -kInf, vmin = finite ? v : kInf;
      mx[u] = mx[u] < vmax ? vmax : mx[u];
      mn[u] = vmin < mn[u] ? vmin : mn[u];
      active[u] += finite & (v > c.threshold);
      l2 += static_cast<double>(v) * v;
      if (kSpatial) cell[u] += v;
      if (kSaturation) saturated += (flushed >= c.hi) | (flushed <= c.lo);  // Inf too; NaN compares false
    }
  }
  p->l2 += std::sqrt(l2);
  t->nans += nans;
  t->infs += infs;
  t->saturated += saturated;
  // The sketch: one scatter per value, the part that does not vectorise; the slots are computed a block
  // at a time with vectors first. +0.0 (half of a ReLU layer) needs no scatter: it is counted with
  // vectors and added to its spare counter once (AVX-512: the other slots are packed with a register
  // compress), or goes to a rotating spare counter instead of one long chain of slot-0 increments.
  int32_t* hist = t->hist.data();
  Sketch(row, positions * units, c, hist);
}
bool Clean(const float* row, int64_t n) {
  uint32_t bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>((Bits(row + i) & kExponent) == kExponent);
  return bad == 0;
}

template <bool kSaturation, bool kSpatial>
void Examples(const float* x, int64_t begin, int64_t end, int64_t positions, int64_t units, const Params& c,
              Moments* p, Tally* t) {
  for (int64_t e = begin; e < end; ++e) {
    const float* row = x + e * positions * units;
    if (Clean(row, positions * units)) {
      Example<true, kSaturation, kSpatial>(row, positions, units, c, p, t);
    } else {
      Example<false, kSaturation, kSpatial>(row, positions, units, c, p, t);
    }
  }
}

class SummariesOp : public OpKernel {
 public:
  explicit SummariesOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shift", &shift_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sketch_size", &size_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("active_threshold", &threshold_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("saturation_hi", &sat_hi_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("saturation_lo", &sat_lo_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("saturation", &saturation_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("spatial", &spatial_));
    OP_REQUIRES(ctx, shift_ >= 0 && shift_ < 32 && size_ > 0 && (int64_t{1} << (32 - shift_)) <= size_,
                errors::InvalidArgument("sketch_size ", size_, " does not hold every slot of shift ", shift_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    OP_REQUIRES(ctx, input.dims() == 3, errors::InvalidArgument("x must be (batch, positions, units)"));
    const int64_t batch = input.dim_size(0), positions = input.dim_size(1), units = input.dim_size(2);
    const float* x = input.flat<float>().data();

    // Blocks of a fixed number of examples, each with its own moments; one shard of blocks per worker
    // thread, each with its own tally. The blocks, not the shards, fix every floating-point sum.
    const auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
    const int64_t per_block = std::max<int64_t>(1, kBlockValues / std::max<int64_t>(1, positions * units));
    const int64_t blocks = (batch + per_block - 1) / per_block;
    const int64_t shards = std::max<int64_t>(1, std::min<int64_t>(blocks, workers->num_threads));
    std::vector<Moments> moments(blocks);
    std::vector<Tally> tallies(shards);
    auto run = [&](int64_t first, int64_t last) {
      for (int64_t s = first; s < last; ++s) {
        Tally* t = &tallies[s];
        t->active.assign(units, 0);
        t->max.assign(units, -std::numeric_limits<float>::infinity());
        t->min.assign(units, std::numeric_limits<float>::infinity());
        t->hist.assign(size_ + kZeroLanes, 0);
        for (int64_t b = blocks * s / shards; b < blocks * (s + 1) / shards; ++b) {
          OneBlock(x, b * per_block, std::min(batch, (b + 1) * per_block), positions, units, &moments[b], t);
        }
      }
    };
    const int64_t cost = std::max<int64_t>(1, 20 * positions * units * (batch / shards));  // cycles, roughly
    workers->workers->ParallelFor(shards, cost, run);
    Merge(ctx, moments, tallies, positions, units);
  }

 private:
  // Examples [begin, end) (one block, never empty) into its moments p and its shard's tally t.
  void OneBlock(const float* x, int64_t begin, int64_t end, int64_t positions, int64_t units, Moments* p,
                Tally* t) const {
    p->shift.assign(units, 0.0);
    p->sum.assign(units, 0.0);
    p->sq.assign(units, 0.0);
    p->nonfinite.assign(units, 0);
    p->spatial.assign(spatial_ ? positions * units : 0, 0.0);
    p->values = (end - begin) * positions;
    // Sums of (x - shift) and its square: with the shift near the data, the variance does not cancel.
    for (int64_t u = 0; u < units; ++u) {
      const float v = x[begin * positions * units + u];
      p->shift[u] = std::isfinite(v) && std::fpclassify(v) != FP_SUBNORMAL ? v : 0.0;
    }
    const Params c{threshold_, sat_hi_, sat_lo_, static_cast<uint32_t>(shift_), static_cast<uint32_t>(size_)};
    if (saturation_ && spatial_) Examples<true, true>(x, begin, end, positions, units, c, p, t);
    if (saturation_ && !spatial_) Examples<true, false>(x, begin, end, positions, units, c, p, t);
    if (!saturation_ && spatial_) Examples<false, true>(x, begin, end, positions, units, c, p, t);
    if (!saturation_ && !spatial_) Examples<false, false>(x, begin, end, positions, units, c, p, t);
  }

  // The blocks' moments in block order (the sums' one order), the shards' tallies in any (exact).
  void Merge(OpKernelContext* ctx, const std::vector<Moments>& moments, const std::vector<Tally>& tallies,
             int64_t positions, int64_t units) const {
    const TensorShape vec({units});
    Tensor* out[12];
    for (int i = 0; i < 6; ++i) OP_REQUIRES_OK(ctx, ctx->allocate_output(i, vec, &out[i]));
    for (int i = 6; i < 10; ++i) OP_REQUIRES_OK(ctx, ctx->allocate_output(i, TensorShape({}), &out[i]));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(10, TensorShape({spatial_ ? positions * units : 0}), &out[10]));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(11, TensorShape({size_}), &out[11]));
    auto count = out[0]->flat<float>(), sum = out[1]->flat<float>(), m2 = out[2]->flat<float>();
    auto mx = out[3]->flat<float>(), mn = out[4]->flat<float>(), active = out[5]->flat<float>();
    for (int64_t u = 0; u < units; ++u) {
      // Chan et al.: block by block, (n, mean, m2) of the values seen so far.
      double n = 0, mean = 0, acc = 0, act = 0;
      float hi = -std::numeric_limits<float>::infinity(), lo = std::numeric_limits<float>::infinity();
      for (const Tally& t : tallies) {
        hi = std::max(hi, t.max[u]);
        lo = std::min(lo, t.min[u]);
        act += t.active[u];
      }
      for (const Moments& p : moments) {
        const double nb = static_cast<double>(p.values - p.nonfinite[u]);
        if (nb == 0) continue;
        const double mb = p.shift[u] + p.sum[u] / nb;
        const double m2b = std::max(0.0, p.sq[u] - p.sum[u] * p.sum[u] / nb);
        const double total = n + nb, delta = mb - mean;
        mean += delta * nb / total;
        acc += m2b + delta * delta * n * nb / total;
        n = total;
      }
      count(u) = static_cast<float>(n);
      sum(u) = static_cast<float>(mean * n);
      m2(u) = static_cast<float>(acc);
      mx(u) = hi;
      mn(u) = lo;
      active(u) = static_cast<float>(act);
    }
    double l2 = 0;
    int64_t nans = 0, infs = 0, saturated = 0;
    for (const Moments& p : moments) l2 += p.l2;
    for (const Tally& t : tallies) {
      nans += t.nans;
      infs += t.infs;
      saturated += t.saturated;
    }
    out[6]->scalar<float>()() = static_cast<float>(l2);
    out[9]->scalar<float>()() = static_cast<float>(saturated);
    auto spatial = out[10]->flat<float>();
    for (int64_t i = 0; i < spatial.size(); ++i) {
      double s = 0;
      for (const Moments& p : moments) s += p.spatial[i];
      spatial(i) = static_cast<float>(s);
    }
    auto sketch = out[11]->flat<int32_t>();
    for (int64_t i = 0; i < size_; ++i) {
      int32_t c = 0;
      for (const Tally& t : tallies) c += t.hist[i];
      sketch(i) = c;
    }
    for (const Tally& t : tallies) {
      for (int k = 0; k < kZeroLanes; ++k) sketch(0) += t.hist[size_ + k];
    }
    out[7]->scalar<float>()() = static_cast<float>(nans);
    out[8]->scalar<float>()() = static_cast<float>(infs);
  }

  int64_t shift_, size_;
  float threshold_, sat_hi_, sat_lo_;
  bool saturation_, spatial_;
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("LayerprobeSummaries").Device(DEVICE_CPU), SummariesOp);
