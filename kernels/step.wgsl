// What changes per forward call (written once per window call with queue.write_buffer): the
// number of tokens and the position of the first. Prepended to every kernel.
struct Step {
    n_tokens: u32,
    pos: u32,
    _pad0: u32,
    _pad1: u32,
}
