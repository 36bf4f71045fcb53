// What changes per forward call (written once per window call with queue.write_buffer): the
// number of tokens (their sequences and positions are a storage buffer of the attention
// kernel). Prepended to every kernel.
struct Step {
    n_tokens: u32,
    _pad2: u32,
    _pad0: u32,
    _pad1: u32,
}
