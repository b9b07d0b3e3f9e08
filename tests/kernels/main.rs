//! Every kernel against its CPU reference (src/reference/) on every test device: lavapipe
//! (Vulkan) with and without f16 and subgroups, and llvmpipe (GL).

#[path = "../common/cases.rs"]
mod cases;
mod common;

mod attention;
mod elementwise;
mod gpu;
mod log_prob;
mod matrix;
mod rms_norm;
mod rope;
mod top_k;
