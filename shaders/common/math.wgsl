// Small numeric helpers shared by the kernels.

struct ArgMax {
    value: f32,
    index: u32,
}

// The larger of two candidates; equal values keep the smaller index (as torch.argmax does).
fn argmax_merge(a: ArgMax, b: ArgMax) -> ArgMax {
    if b.value > a.value || (b.value == a.value && b.index < a.index) {
        return b;
    }
    return a;
}

// tanh whose argument is clamped first: some backends build tanh from exp and return NaN for
// large |x|; tanh(±15) is ±1 to f32 precision, so the clamp changes nothing else.
fn tanh_clamped(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

// Gemma's logit soft-cap: cap * tanh(x / cap). A cap of 0 means no capping.
fn soft_cap(x: f32, cap: f32) -> f32 {
    if cap > 0.0 {
        return cap * tanh_clamped(x / cap);
    }
    return x;
}
