// Layered DAG layout: longest-path layering plus barycentre ordering, in O((V + E) log V).
//
// A pure function of the graph (no DOM, no three.js), so it runs in the page, in a worker or in a test.
// General layered-layout libraries (dagre, elkjs) minimise crossings globally and take seconds at 1,000
// nodes; this keeps the part that carries meaning (a step's layer is its depth) and a cheap crossing
// reduction (a few barycentre sweeps), which lays out 10,000 nodes in tens of milliseconds.

/**
 * Lay out a DAG of `n` nodes and the edges `src[k] -> dst[k]` (node indices).
 *
 * @param {number} n
 * @param {ArrayLike<number>} src
 * @param {ArrayLike<number>} dst
 * @param {{sweeps?: number, dx?: number, dy?: number, dz?: number, lift?: ArrayLike<number>}} [options]
 *   sweeps: down-and-up barycentre passes (default 2); dx, dy: spacing between layers and within one;
 *   dz: depth per unit of `lift` (e.g. a step's priority, -2..2), with a small alternating offset so
 *   edges within a layer do not hide each other.
 * @returns {{layer: Int32Array, order: Int32Array, layers: number, width: Int32Array,
 *   topo: Int32Array, x: Float32Array, y: Float32Array, z: Float32Array, cyclic: number}}
 *   layer and order (position within the layer) per node; `topo` a topological order; `cyclic` the
 *   number of nodes on or behind a cycle (placed in one extra last layer, never dropped).
 */
export function layoutDag(n, src, dst, options = {}) {
  const sweeps = options.sweeps ?? 2;
  const dx = options.dx ?? 4;
  const dy = options.dy ?? 2;
  const dz = options.dz ?? 1.5;
  const m = src.length;
  if (dst.length !== m) throw new Error(`layoutDag: src has ${m} edges but dst has ${dst.length}`);
  for (let k = 0; k < m; k++) {
    if (!(src[k] >= 0 && src[k] < n && dst[k] >= 0 && dst[k] < n)) {
      throw new Error(`layoutDag: edge ${k} (${src[k]} -> ${dst[k]}) names a node outside 0..${n - 1}`);
    }
  }
  const out = csr(n, src, dst);
  const inn = csr(n, dst, src);

  // Longest-path layering by Kahn's algorithm: a node's layer is one more than its deepest parent's.
  const indeg = new Int32Array(n);
  for (let k = 0; k < m; k++) indeg[dst[k]]++;
  const topo = new Int32Array(n);
  const layer = new Int32Array(n);
  let head = 0;
  let tail = 0;
  for (let v = 0; v < n; v++) if (indeg[v] === 0) topo[tail++] = v;
  while (head < tail) {
    const u = topo[head++];
    for (let e = out.start[u]; e < out.start[u + 1]; e++) {
      const w = out.adj[e];
      if (layer[u] + 1 > layer[w]) layer[w] = layer[u] + 1;
      if (--indeg[w] === 0) topo[tail++] = w;
    }
  }
  let layers = 0;
  for (let i = 0; i < tail; i++) if (layer[topo[i]] + 1 > layers) layers = layer[topo[i]] + 1;
  const cyclic = n - tail;
  if (cyclic > 0) {
    // Validation refuses cycles; a bad graph still shows every node, its cyclic part apart.
    for (let v = 0; v < n; v++) if (indeg[v] > 0) { layer[v] = layers; topo[tail++] = v; }
    layers += 1;
  }

  // Bucket the nodes by layer, in topological order (a stable first ordering).
  const width = new Int32Array(layers);
  for (let v = 0; v < n; v++) width[layer[v]]++;
  const start = new Int32Array(layers + 1);
  for (let l = 0; l < layers; l++) start[l + 1] = start[l] + width[l];
  const slots = new Int32Array(n);
  const fill = start.slice(0, layers);
  for (let i = 0; i < n; i++) { const v = topo[i]; slots[fill[layer[v]]++] = v; }
  const order = new Int32Array(n);
  for (let l = 0; l < layers; l++) for (let i = start[l]; i < start[l + 1]; i++) order[slots[i]] = i - start[l];

  // Barycentre sweeps: order each layer by the mean centred position of its neighbours in the layers
  // already placed (parents going down, children going up); nodes without such neighbours keep theirs.
  const centre = new Float64Array(n);
  const key = new Float64Array(n);
  const recentre = () => { for (let v = 0; v < n; v++) centre[v] = order[v] - (width[layer[v]] - 1) / 2; };
  const sortLayer = (l, adj) => {
    const a = start[l];
    const b = start[l + 1];
    for (let i = a; i < b; i++) {
      const v = slots[i];
      let sum = 0;
      let count = 0;
      for (let e = adj.start[v]; e < adj.start[v + 1]; e++) { sum += centre[adj.adj[e]]; count++; }
      key[v] = count ? sum / count : centre[v];
    }
    const part = Array.from(slots.subarray(a, b));
    part.sort((p, q) => key[p] - key[q] || order[p] - order[q]);
    for (let i = 0; i < part.length; i++) {
      slots[a + i] = part[i];
      order[part[i]] = i;
      centre[part[i]] = i - (part.length - 1) / 2;
    }
  };
  recentre();
  for (let s = 0; s < sweeps; s++) {
    for (let l = 1; l < layers; l++) sortLayer(l, inn);
    for (let l = layers - 2; l >= 0; l--) sortLayer(l, out);
  }

  const x = new Float32Array(n);
  const y = new Float32Array(n);
  const z = new Float32Array(n);
  const lift = options.lift;
  const x0 = ((layers - 1) * dx) / 2;
  for (let v = 0; v < n; v++) {
    x[v] = layer[v] * dx - x0;
    y[v] = -(order[v] - (width[layer[v]] - 1) / 2) * dy;
    z[v] = (lift ? lift[v] * dz : 0) + (order[v] % 2 ? 0.2 : -0.2) * dy;
  }
  return { layer, order, layers, width, topo, x, y, z, cyclic };
}

/** Compressed adjacency (CSR) of the edges `from[k] -> to[k]`. */
function csr(n, from, to) {
  const start = new Int32Array(n + 1);
  for (let k = 0; k < from.length; k++) start[from[k] + 1]++;
  for (let v = 0; v < n; v++) start[v + 1] += start[v];
  const next = start.slice(0, n);
  const adj = new Int32Array(from.length);
  for (let k = 0; k < from.length; k++) adj[next[from[k]]++] = to[k];
  return { start, adj };
}

/**
 * A seeded random layered DAG of `n` nodes (about two edges per node), for benchmarks and tests.
 * @returns {{src: Int32Array, dst: Int32Array}}
 */
export function randomDag(n, seed = 1) {
  let s = seed >>> 0 || 1;
  const rand = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 4294967296; };
  const depth = Math.max(1, Math.round(Math.sqrt(n)));
  const band = (v) => Math.floor((v * depth) / n);
  const src = [];
  const dst = [];
  for (let v = 1; v < n; v++) {
    const b = band(v);
    const parents = b === 0 ? 0 : 1 + Math.floor(rand() * 3);
    for (let p = 0; p < parents; p++) {
      // Mostly from the band just above, sometimes skipping layers.
      const from = rand() < 0.8 ? b - 1 : Math.floor(rand() * b);
      const lo = Math.ceil((from * n) / depth);
      const hi = Math.min(v, Math.ceil(((from + 1) * n) / depth));
      if (hi > lo) { src.push(lo + Math.floor(rand() * (hi - lo))); dst.push(v); }
    }
  }
  return { src: Int32Array.from(src), dst: Int32Array.from(dst) };
}
