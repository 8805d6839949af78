//! Launch geometry of the CUDA kernels, defined once: block sizes, rows per block, tile sizes and shared-memory
//! layouts that both a kernel (`kernels/*.cu`) and its launcher (`src/kernels/launch/`) depend on.
//!
//! This file is compiled twice, never by hand-copying values:
//! - by build.rs (as a `#[path]` module), which writes `$OUT_DIR/geometry.cuh` (one `#define` per entry,
//!   included by the `.cu` files for nvcc and for the simulator's C++ compile) and `$OUT_DIR/geometry.rs`
//!   (one `pub const NAME: u32` per entry, included by `src/kernels/launch/mod.rs` as `launch::geometry`);
//! - by `tools/check-kernels.sh` (with rustc), which writes the same header for its own nvcc run.
//!
//! An entry is `NAME = constant expression;` (it may use the entries above it) with a doc comment that says
//! what it is and which kernels use it. The `const` assertions at the end are checked when build.rs compiles.
#![allow(dead_code)]

/// One entry of the table: name, value, doc text.
pub struct Entry {
    pub name: &'static str,
    pub value: u32,
    pub doc: &'static str,
}

macro_rules! geometry {
    ($($(#[doc = $doc:literal])+ $name:ident = $value:expr;)*) => {
        $($(#[doc = $doc])+ pub const $name: u32 = $value;)*
        /// Every entry, in definition order.
        pub const TABLE: &[Entry] =
            &[$(Entry { name: stringify!($name), value: $name, doc: concat!($($doc, "\n"),+) }),*];
    };
}

geometry! {
    // ---- elementwise and row kernels
    /// Threads per block of the one-thread-per-element (or per 16-byte pack) kernels: gelu, residual, casts,
    /// bias_add, colsum_finalize, encoder_forward, encoder_backward_wpe, attention_permute/unpermute, adamw_multi;
    /// copy_rows (one block per row, striding).
    EW_BLOCK = 256;
    /// Threads per block of the layernorm kernels (one warp per row).
    LN_BLOCK = 256;
    /// Threads per block of the rmsnorm kernels (one warp per row).
    RMS_BLOCK = 256;
    /// Threads per block of crossentropy (one block per row).
    CE_BLOCK = 256;
    /// Threads per block of entropy (one block per row).
    ENTROPY_BLOCK = 256;
    /// Threads per block of sum_squares_multi_partial and sum_squares_final.
    SUMSQ_BLOCK = 256;
    /// Elements per chunk of the multi-tensor kernels (adamw_multi, sum_squares_multi_partial; one block each).
    MULTI_CHUNK = 1 << 16;
    /// Largest grid of encoder_backward_wte (blocks stride over the token buckets beyond it).
    ENC_WTE_MAX_GRID = 65535;

    // ---- deterministic column sums (colsum.cuh, linear.cu, layernorm.cu)
    /// Columns per block of colsum_partial (blockDim.x).
    COLSUM_COLS = 32;
    /// Row lanes per block of colsum_partial (blockDim.y).
    COLSUM_LANES = 8;
    /// Rows per partial sum (one blockIdx.y each).
    COLSUM_ROWS = 256;

    // ---- fused attention on CUDA cores (attention.cu)
    /// Warps per block of attention_forward_hs* and attention_backward_{dq,dkv}_hs* (one warp per row).
    ATT_WARPS = 4;

    // ---- unfused attention (attention_unfused.cu)
    /// Warps (= rows) per block of softmax_causal.
    SMX_WARPS = 8;

    // ---- tensor-core (WMMA) attention, bf16, head size 64 (attention.cu); shared-memory offsets in bytes
    /// Warps per block of the WMMA attention kernels (16 rows each).
    WA_WARPS = 4;
    /// Query rows per block of attention_forward_mma_bf16.
    WA_Q = 16 * WA_WARPS;
    /// Key rows per tile of attention_forward_mma_bf16.
    WA_K = 64;
    /// Head size of the WMMA kernels.
    WA_D = 64;
    /// bf16 row stride of the staged tiles in elements (pad 8: 16 bytes).
    WA_LDH = WA_D + 8;
    /// f32 row stride of the per-warp tiles in elements (pad 4: 16 bytes).
    WA_LDF = WA_D + 4;
    /// Forward: offset of the K tile (after the Q tile).
    WA_OFF_K = WA_Q * WA_LDH * 2;
    /// Forward: offset of the V tile.
    WA_OFF_V = WA_OFF_K + WA_K * WA_LDH * 2;
    /// Dynamic shared memory of attention_forward_mma_bf16.
    WA_SMEM = WA_OFF_V + WA_K * WA_LDH * 2;
    /// Backward: rows per tile (queries or keys) and per block of the dq and dkv kernels.
    WB_T = 16 * WA_WARPS;
    /// Backward: bytes of a staged bf16 tile.
    WB_TILE = WB_T * WA_LDH * 2;
    /// Backward: bytes of the warps' 16 x 64 f32 tiles.
    WB_WF = WA_WARPS * 16 * WA_LDF * 4;
    /// Backward: bytes of the warps' 16 x 64 bf16 tiles.
    WB_WH = WA_WARPS * 16 * WA_LDH * 2;
    /// dq: offset of S (after the Q, dO, K, V tiles).
    WBQ_OFF_S = 4 * WB_TILE;
    /// dq: offset of dP (f32).
    WBQ_OFF_DP = WBQ_OFF_S + WB_WF;
    /// dq: offset of dS (bf16).
    WBQ_OFF_DS = WBQ_OFF_DP + WB_WF;
    /// dq: offset of L and D (f32 per query row).
    WBQ_OFF_L = WBQ_OFF_DS + WB_WH;
    /// Dynamic shared memory of attention_backward_dq_wmma_bf16.
    WBQ_SMEM = WBQ_OFF_L + 2 * WB_T * 4;
    /// dkv: offset of S^T (after the K, V, Q, dO tiles).
    WBK_OFF_S = 4 * WB_TILE;
    /// dkv: offset of dP^T (f32).
    WBK_OFF_DP = WBK_OFF_S + WB_WF;
    /// dkv: offset of P^T (bf16).
    WBK_OFF_P = WBK_OFF_DP + WB_WF;
    /// dkv: offset of dS^T (bf16).
    WBK_OFF_DS = WBK_OFF_P + WB_WH;
    /// Dynamic shared memory of attention_backward_dkv_wmma_bf16.
    WBK_SMEM = WBK_OFF_DS + WB_WH;

    // ---- the sampler (sample.cu)
    /// Threads per block of sample (one block per row; thread c owns chunk c of crate::ops::sample's
    /// blocked sums, so this is crate::ops::sample::CHUNKS, asserted by the launcher).
    SAMPLE_BLOCK = 256;

    // ---- decode attention (attention_decode.cu)
    /// Warps per block of attention_decode_hs* (one block per batch row and head; the keys split among them).
    DEC_WARPS = 4;
}

// The kernels' reductions keep one slot per warp in 32-entry shared arrays.
const _: () = assert!(CE_BLOCK.is_multiple_of(32) && CE_BLOCK <= 1024);
const _: () = assert!(ENTROPY_BLOCK.is_multiple_of(32) && ENTROPY_BLOCK <= 1024);
const _: () = assert!(SUMSQ_BLOCK.is_multiple_of(32) && SUMSQ_BLOCK <= 1024);
const _: () = assert!(LN_BLOCK.is_multiple_of(32) && RMS_BLOCK.is_multiple_of(32) && EW_BLOCK.is_multiple_of(32));
// colsum_partial: one column per lane of a warp.
const _: () = assert!(COLSUM_COLS == 32);
// The WMMA kernels: each warp owns 16 rows of a 64-row tile; the head size is 64.
const _: () = assert!(WA_Q == 64 && WA_K == 64 && WA_D == 64 && WB_T == 64);
// Dynamic shared memory of one block is at most 227 KiB (sm_90; the simulator's limit too).
const _: () = assert!(WA_SMEM <= 227 * 1024 && WBQ_SMEM <= 227 * 1024 && WBK_SMEM <= 227 * 1024);

/// `$OUT_DIR/geometry.cuh`: one `#define` per entry.
pub fn cuda_header() -> String {
    let mut s = String::from(
        "// Generated from kernels/geometry.rs (by build.rs, or tools/check-kernels.sh): do not edit.\n#pragma once\n",
    );
    for e in TABLE {
        for l in e.doc.lines() {
            s.push_str(&format!("//{l}\n"));
        }
        s.push_str(&format!("#define {} {}\n", e.name, e.value));
    }
    s
}

/// `$OUT_DIR/geometry.rs`: one `pub const NAME: u32` per entry.
pub fn rust_consts() -> String {
    let mut s = String::from("// Generated from kernels/geometry.rs by build.rs: do not edit.\n");
    for e in TABLE {
        for l in e.doc.lines() {
            s.push_str(&format!("///{l}\n"));
        }
        s.push_str(&format!("pub const {}: u32 = {};\n", e.name, e.value));
    }
    s
}
