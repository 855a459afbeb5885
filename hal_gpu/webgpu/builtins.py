"""The driver's built-in kernels, in WGSL (WebGPU's own shading language: wgpu compiles it, so
the driver needs no compiler).

- fg_copy / fg_fill: bytes [start, start + length) of a buffer from another buffer's bytes, or
  from a 32-bit pattern (already repeated to a word, which the model's pattern-aligned offsets
  allow). WebGPU copies and clears only whole 4-byte words; these take any byte range. Each
  invocation owns one word of the target and writes only the bytes in range, with atomics on
  the partial words at the ends, so a neighbouring write in the same region is never lost.
- fg_indirect_check: runs before every dispatch_indirect (as the Vulkan driver's): copies the
  count from the indirect buffer into the dispatch's state (hal/spirv_abi.py) and its indirect
  arguments, zeros with the out-of-range flag set when a dimension is over the limit, so the
  dispatch never launches an out-of-range grid and the submission fails naming the count.
"""

WORKGROUP = 64
MAX_GROUPS = 65535  # per dimension, WebGPU's minimum limit: the byte kernels stride over the rest

BYTES = """
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read> params: array<u32>;  // source offset, start, length, pattern

fn mask_of(w: u32, start: u32, end: u32) -> u32 {
    var m = 0u;
    for (var b = 0u; b < 4u; b++) {
        let a = w * 4u + b;
        if (a >= start && a < end) { m |= 0xffu << (b * 8u); }
    }
    return m;
}

fn put(w: u32, value: u32, mask: u32) {
    if (mask == 0xffffffffu) {
        atomicStore(&dst[w], value);
    } else {
        atomicAnd(&dst[w], ~mask);
        atomicOr(&dst[w], value & mask);
    }
}

@compute @workgroup_size(64)
fn fg_copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let origin = params[0];
    let start = params[1];
    let end = start + params[2];
    for (var w = start / 4u + gid.x; w < (end + 3u) / 4u; w += groups.x * 64u) {
        var value = 0u;
        for (var b = 0u; b < 4u; b++) {
            let a = w * 4u + b;
            if (a >= start && a < end) {
                let s = origin + a - start;
                value |= ((src[s / 4u] >> ((s % 4u) * 8u)) & 0xffu) << (b * 8u);
            }
        }
        put(w, value, mask_of(w, start, end));
    }
}

@compute @workgroup_size(64)
fn fg_fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let start = params[1];
    let end = start + params[2];
    for (var w = start / 4u + gid.x; w < (end + 3u) / 4u; w += groups.x * 64u) {
        put(w, params[3], mask_of(w, start, end));
    }
}
"""

INDIRECT_CHECK = """
@group(0) @binding(0) var<storage, read> counts: array<u32>;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;  // the dispatch's state
@group(0) @binding(2) var<storage, read_write> args: array<u32>;   // x, y, z, count's word, limit

@compute @workgroup_size(1)
fn fg_indirect_check() {
    let at = args[3];
    let limit = args[4];
    let count = vec3<u32>(counts[at], counts[at + 1u], counts[at + 2u]);
    let over = count.x > limit || count.y > limit || count.z > limit;
    let run = select(count, vec3<u32>(0u), over);
    for (var d = 0u; d < 3u; d++) {
        state[d] = run[d];
        args[d] = run[d];
        state[4u + d] = count[d];
    }
    state[7] = select(0u, 1u, over);
}
"""
