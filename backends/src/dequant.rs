//! The model's matrices as f32, for the backends that convert reduced-precision weights once at
//! load (`ndarray`, `candle`) instead of in their kernels.
//!
//! An f32 file costs nothing here: every tensor is borrowed from the mapping. A file in f16,
//! bf16 or q8_0 has each matrix dequantized (exactly: see `gpt2_weights::dtype`) into a new f32
//! buffer in the `[in, out]` layout the f32 code expects, and the bytes copied are reported in
//! `EngineInfo::weights_copied_bytes`. The backends then run their f32 code unchanged, which is
//! what keeps them token-exact with `naive` in every dtype, except for one thing the f32 code
//! must add: a product with a q8_0 matrix rounds its input to q8_0 first
//! (`gpt2_weights::dtype`'s rule), so each converted matrix says whether it came from q8_0
//! ([`RoundsInput`]). The memory it takes is checked against the machine first ([`Budget`]).

use std::borrow::Cow;

use gpt2_weights::{Gpt2Weights, Linear, Matrix};

use crate::engine::EngineError;
use crate::memory::Budget;

/// One block's linear weights as f32, `[in, out]`.
pub struct F32Layer<'w> {
    pub qkv_w: Cow<'w, [f32]>,       // (C, 3C)
    pub attn_proj_w: Cow<'w, [f32]>, // (C, C)
    pub fc_w: Cow<'w, [f32]>,        // (C, H)
    pub fc_proj_w: Cow<'w, [f32]>,   // (H, C)
    pub rounds_input: RoundsInput,
}

/// Which of a block's products round their input to q8_0 (their matrix is q8_0 in the file).
#[derive(Debug, Clone, Copy)]
pub struct RoundsInput {
    pub qkv: bool,
    pub attn_proj: bool,
    pub fc: bool,
    pub fc_proj: bool,
}

/// The matrices of a model as f32 (everything else is f32 in every file).
pub struct F32Matrices<'w> {
    pub wte: Cow<'w, [f32]>, // (V, C)
    /// (V, C); `None` when the output layer is tied to `wte`.
    pub lm_head: Option<Cow<'w, [f32]>>,
    pub layers: Vec<F32Layer<'w>>,
    /// Whether the output layer's product rounds its input to q8_0 (its matrix is q8_0).
    pub logits_round_input: bool,
    /// Bytes of the f32 buffers made here (0 for an f32 file).
    pub converted_bytes: u64,
}

impl<'w> F32Matrices<'w> {
    /// Borrows or converts every matrix of `w`, after checking that the converted ones fit in
    /// memory (named after `backend` in the error).
    pub fn new(w: &Gpt2Weights<'w>, backend: &'static str) -> Result<Self, EngineError> {
        let converted = |values: usize, dtype| {
            if dtype == gpt2_weights::Dtype::F32 {
                0
            } else {
                values
            }
        };
        let mut values = converted(w.wte.rows() * w.wte.cols(), w.wte.dtype());
        if !w.tied_output {
            values += converted(w.lm_head.rows() * w.lm_head.cols(), w.lm_head.dtype());
        }
        for l in &w.layers {
            for m in [l.qkv_w, l.attn_proj_w, l.fc_w, l.fc_proj_w] {
                values += converted(m.in_features() * m.out_features(), m.dtype());
            }
        }
        Budget::new(backend)
            .f32s("weights converted to f32", &[values])
            .check()?;
        let matrix = |m: Matrix<'w>| m.values().to_f32();
        let linear = |l: Linear<'w>| l.to_f32_in_out();
        Ok(F32Matrices {
            wte: matrix(w.wte),
            lm_head: (!w.tied_output).then(|| matrix(w.lm_head)),
            layers: w
                .layers
                .iter()
                .map(|l| F32Layer {
                    qkv_w: linear(l.qkv_w),
                    attn_proj_w: linear(l.attn_proj_w),
                    fc_w: linear(l.fc_w),
                    fc_proj_w: linear(l.fc_proj_w),
                    rounds_input: RoundsInput {
                        qkv: l.qkv_w.dtype().rounds_input(),
                        attn_proj: l.attn_proj_w.dtype().rounds_input(),
                        fc: l.fc_w.dtype().rounds_input(),
                        fc_proj: l.fc_proj_w.dtype().rounds_input(),
                    },
                })
                .collect(),
            logits_round_input: w.lm_head.dtype().rounds_input(),
            converted_bytes: values as u64 * 4,
        })
    }
}
