// The backward's second products on warpgroups, shared by the dense and block Hopper kernels:
// dq += dS K (dq kernels) and dv += P^T dO, dk += dS^T Q (dk/dv kernels), the A operand from
// registers in 16-bit parts (the cancellation argument of kernels/mma_backward.cuh) and the B
// operand N-major in a stage, `stage` bytes past its descriptor. Each issues its products,
// commits them and waits for them: the stage may be released after it.
#pragma once

#include "cuda/hopper/wgmma.cuh"
#include "cuda/kernels/mma_backward.cuh"

namespace dilated::cuda::hopper {

// dq += dS K over NT * 8 keys; ds_acc: dS in the score accumulators' layout.
template <typename Elem, int D, int NT>
__device__ __forceinline__ void accumulate_dq(float (&dq)[D / 8][4], float (&ds_acc)[1][NT][4],
                                              uint64_t kn_desc, uint32_t stage) {
  uint32_t ds[kBackwardParts][1][NT / 2][4];
  accumulators_to_a<Elem, kBackwardParts, 1, NT / 2>(ds, ds_acc);

  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < NT / 2; ++kk) {
#pragma unroll
    for (int part = 0; part < kBackwardParts; ++part) {
      wgmma_rs<Elem, D>(dq, ds[part][0][kk], desc_plus(kn_desc, stage + n_major_step(kk)));
    }
  }
  wgmma_commit();
  wgmma_wait<0>();
  pin_accumulators(dq);
#pragma unroll
  for (int part = 0; part < kBackwardParts; ++part) pin_fragments(ds[part][0]);
}

// dv += P^T dO and dk += dS^T Q over QT * 8 queries; pt, dst: P^T and dS^T in the accumulators'
// layout (keys the rows).
template <typename Elem, int D, int QT>
__device__ __forceinline__ void accumulate_dv_dk(float (&dv)[D / 8][4], float (&dk)[D / 8][4],
                                                 float (&pt)[1][QT][4], float (&dst)[1][QT][4],
                                                 uint64_t don_desc, uint64_t qn_desc,
                                                 uint32_t stage) {
  uint32_t pa[kValueParts][1][QT / 2][4], dsa[kBackwardParts][1][QT / 2][4];
  accumulators_to_a<Elem, kValueParts, 1, QT / 2>(pa, pt);
  accumulators_to_a<Elem, kBackwardParts, 1, QT / 2>(dsa, dst);

  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < QT / 2; ++kk) {
#pragma unroll
    for (int part = 0; part < kValueParts; ++part) {
      wgmma_rs<Elem, D>(dv, pa[part][0][kk], desc_plus(don_desc, stage + n_major_step(kk)));
    }
  }
#pragma unroll
  for (int kk = 0; kk < QT / 2; ++kk) {
#pragma unroll
    for (int part = 0; part < kBackwardParts; ++part) {
      wgmma_rs<Elem, D>(dk, dsa[part][0][kk], desc_plus(qn_desc, stage + n_major_step(kk)));
    }
  }
  wgmma_commit();
  wgmma_wait<0>();
  pin_accumulators(dv);
  pin_accumulators(dk);
#pragma unroll
  for (int part = 0; part < kValueParts; ++part) pin_fragments(pa[part][0]);
#pragma unroll
  for (int part = 0; part < kBackwardParts; ++part) pin_fragments(dsa[part][0]);
}

}  // namespace dilated::cuda::hopper
