// The 3D DAG universe: nodes as one InstancedMesh, edges as one LineSegments, particles on the edges into
// running steps, a pulsing halo on the bottleneck, labels for small graphs. A handful of draw calls
// whatever the graph's size; a state change rewrites only the instance colour buffer.
//
// Edge "thickness by bytes passed": WebGL lines are one pixel wide on most platforms, so the bytes an
// edge carried are drawn as its brightness (log scale), and the critical path in holographic purple.

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";

export const COLOURS = {
  success: "#00ff9d",
  failure: "#ff4d4f",
  running: "#00d1ff",
  waiting: "#2c3447",
  skipped: "#4b4266",
  critical: "#b388ff",
  edge: "#00d1ff",
};
const MAX_LABELS = 150;
// Adaptive resolution, as 3D viewers do: while the camera moves, frames are drawn at MOVING_SCALE of the
// resolution, and while a large graph is redrawn continuously (a live run's stream of states, particles
// flowing) at BUSY_SCALE; at full resolution again once it has been still for SETTLE_MS. On software GL
// the pixels cost more than the scene, and a moving picture hides the blur.
const MOVING_SCALE = 0.4;
const BUSY_SCALE = 0.45;
const SETTLE_MS = 180;
const MAX_PARTICLES = 4000;
const PER_EDGE = 4;

/** Whether this browser gives a WebGL2 context (the universe needs one). */
export function webgl2Available(doc = document) {
  try {
    return Boolean(doc.createElement("canvas").getContext("webgl2"));
  } catch {
    return false;
  }
}

export class Universe {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {HTMLElement} labels a layer over the canvas for node labels (HTML: any script, CJK included)
   */
  constructor(canvas, labels) {
    this.canvas = canvas;
    this.labelLayer = labels;
    // No multisampling and a transparent canvas over the page's own gradient and grid (cockpit.css): on
    // software GL both cost more than the scene itself (rotating 1,000 nodes: 7.6 -> 14 fps).
    this.renderer = new THREE.WebGLRenderer({
      canvas, antialias: false, alpha: true, powerPreference: "high-performance",
    });
    this.renderer.setClearColor(0x000000, 0);
    this.pixelRatio = Math.min(window.devicePixelRatio || 1, 2);
    this.renderer.setPixelRatio(this.pixelRatio);
    this.seenView = new THREE.Matrix4();
    this.seenProjection = new THREE.Matrix4();
    this.movedAt = -Infinity;
    this.busyAt = -Infinity;
    this.scale = 1;
    this.scene = new THREE.Scene();
    this.perspective = new THREE.PerspectiveCamera(50, 1, 0.1, 20000);
    this.ortho = new THREE.OrthographicCamera(-1, 1, 1, -1, -10000, 10000);
    this.camera = this.perspective;
    this.controls3d = new OrbitControls(this.perspective, canvas);
    this.controls2d = new OrbitControls(this.ortho, canvas);
    this.controls2d.enableRotate = false;
    this.controls2d.screenSpacePanning = true;
    this.controls2d.enabled = false;
    for (const c of [this.controls3d, this.controls2d]) {
      c.enableDamping = false;
      c.addEventListener("change", () => this.invalidate());
    }
    this.raycaster = new THREE.Raycaster();
    this.colour = new THREE.Color();
    this.graph = null;
    this.nodes = null;
    this.edges = null;
    this.particles = null;
    this.halo = null;
    this.bottleneck = -1;
    this.flowing = [];
    this.labels = [];
    this.dirty = true;
    this.changed = false;
    this.lastFrame = 0;
    this.frames = 0;
    this.mode = "3d";
    this.resize();
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.loop = this.loop.bind(this);
    requestAnimationFrame(this.loop);
  }

  resize() {
    const w = this.canvas.clientWidth || 1;
    const h = this.canvas.clientHeight || 1;
    this.renderer.setSize(w, h, false);
    this.perspective.aspect = w / h;
    this.perspective.updateProjectionMatrix();
    this.fitOrtho();
    this.dirty = true; // a new size to draw at, not a change of the picture (see adaptResolution)
  }

  /** The picture changed: draw it in the next animation frame. */
  invalidate() {
    this.dirty = true;
    this.changed = true;
  }

  /** Replace the graph: `graph` from model.js, `layout` from layout.js. */
  setGraph(graph, layout) {
    this.clear();
    this.graph = graph;
    this.layout = layout;
    const n = graph.ids.length;
    // Rounder spheres where there are few (labelled) nodes; in a large graph each is a few pixels wide
    // and the vertices are what software GL pays for (rotating 1,000 nodes: 37 -> 53 fps at 20 faces).
    const geometry = new THREE.IcosahedronGeometry(1, n > MAX_LABELS ? 0 : 2);
    const material = new THREE.MeshBasicMaterial({ color: 0xffffff });
    const mesh = new THREE.InstancedMesh(geometry, material, Math.max(n, 1));
    mesh.count = n;
    const matrix = new THREE.Matrix4();
    const scale = new THREE.Vector3();
    const position = new THREE.Vector3();
    const quaternion = new THREE.Quaternion();
    for (let i = 0; i < n; i++) {
      position.set(layout.x[i], layout.y[i], layout.z[i]);
      const s = graph.size[i];
      scale.set(s, s, s);
      matrix.compose(position, quaternion, scale);
      mesh.setMatrixAt(i, matrix);
      mesh.setColorAt(i, this.colour.set(COLOURS.waiting));
    }
    mesh.instanceMatrix.needsUpdate = true;
    if (mesh.instanceColor) mesh.instanceColor.needsUpdate = true;
    mesh.computeBoundingSphere();
    this.nodes = mesh;
    this.scene.add(mesh);

    const m = graph.src.length;
    const positions = new Float32Array(m * 6);
    for (let k = 0; k < m; k++) {
      const a = graph.src[k];
      const b = graph.dst[k];
      positions.set([layout.x[a], layout.y[a], layout.z[a], layout.x[b], layout.y[b], layout.z[b]], k * 6);
    }
    const lineGeometry = new THREE.BufferGeometry();
    lineGeometry.setAttribute("position", new THREE.BufferAttribute(positions, 3));
    lineGeometry.setAttribute("color", new THREE.BufferAttribute(new Float32Array(m * 6), 3));
    const lineMaterial = new THREE.LineBasicMaterial({
      vertexColors: true, transparent: true, opacity: 0.9, blending: THREE.AdditiveBlending, depthWrite: false,
    });
    this.edges = new THREE.LineSegments(lineGeometry, lineMaterial);
    this.scene.add(this.edges);
    this.setEdges(new Uint8Array(m), null);

    const particleGeometry = new THREE.BufferGeometry();
    particleGeometry.setAttribute("position", new THREE.BufferAttribute(new Float32Array(MAX_PARTICLES * 3), 3));
    particleGeometry.setDrawRange(0, 0);
    this.particles = new THREE.Points(
      particleGeometry,
      new THREE.PointsMaterial({
        color: COLOURS.running, size: 0.35, transparent: true, opacity: 0.95,
        blending: THREE.AdditiveBlending, depthWrite: false,
      }),
    );
    this.particles.frustumCulled = false;
    this.scene.add(this.particles);

    this.halo = new THREE.Mesh(
      new THREE.IcosahedronGeometry(1, 2),
      new THREE.MeshBasicMaterial({ color: COLOURS.failure, wireframe: true, transparent: true, opacity: 0.55 }),
    );
    this.halo.visible = false;
    this.scene.add(this.halo);

    this.makeLabels();
    this.fit();
    this.invalidate();
  }

  clear() {
    for (const object of [this.nodes, this.edges, this.particles, this.halo]) {
      if (!object) continue;
      this.scene.remove(object);
      object.geometry.dispose();
      object.material.dispose();
    }
    this.nodes = this.edges = this.particles = this.halo = null;
    this.labelLayer.replaceChildren();
    this.labels = [];
    this.flowing = [];
    this.bottleneck = -1;
  }

  /** Colour node i by its display state (model.js DISPLAY). */
  setState(i, display) {
    this.nodes.setColorAt(i, this.colour.set(COLOURS[display] ?? COLOURS.waiting));
    this.nodes.instanceColor.needsUpdate = true;
    this.invalidate();
  }

  /**
   * Edge colours: `critical[k]` edges in purple; the others circuit blue, brighter the more bytes they
   * carried (`bytes[k]`, null when unknown).
   */
  setEdges(critical, bytes) {
    const colours = this.edges.geometry.getAttribute("color");
    const base = new THREE.Color(COLOURS.edge);
    const purple = new THREE.Color(COLOURS.critical);
    let most = 0;
    if (bytes) for (const b of bytes) most = Math.max(most, b);
    // Additive lines wash into white when thousands overlap: dimmer the more edges there are.
    const dim = Math.min(1, Math.sqrt(500 / Math.max(1, critical.length)));
    for (let k = 0; k < critical.length; k++) {
      const level = dim * (bytes && most > 0 ? 0.25 + 0.75 * (Math.log1p(bytes[k]) / Math.log1p(most)) : 0.35);
      const c = critical[k] ? purple : base;
      const f = critical[k] ? 1 : level;
      colours.setXYZ(2 * k, c.r * f, c.g * f, c.b * f);
      colours.setXYZ(2 * k + 1, c.r * f, c.g * f, c.b * f);
    }
    colours.needsUpdate = true;
    this.invalidate();
  }

  /** Particles flow along these edges (indices into the graph's edges). */
  setFlowing(edgeIndices) {
    this.flowing = edgeIndices.slice(0, Math.floor(MAX_PARTICLES / PER_EDGE));
    if (!this.flowing.length) this.particles.geometry.setDrawRange(0, 0);
    this.invalidate();
  }

  /** The node whose halo pulses (-1: none). */
  setBottleneck(i) {
    this.bottleneck = i;
    if (i < 0) { this.halo.visible = false; this.invalidate(); return; }
    this.halo.position.set(this.layout.x[i], this.layout.y[i], this.layout.z[i]);
    this.halo.visible = true;
    this.invalidate();
  }

  makeLabels() {
    const n = this.graph.ids.length;
    if (n > MAX_LABELS) return;
    for (let i = 0; i < n; i++) {
      const el = document.createElement("div");
      el.className = "label";
      el.textContent = this.graph.names[i];
      this.labelLayer.append(el);
      this.labels.push(el);
    }
  }

  placeLabels() {
    if (!this.labels.length) return;
    const v = new THREE.Vector3();
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    for (let i = 0; i < this.labels.length; i++) {
      v.set(this.layout.x[i], this.layout.y[i], this.layout.z[i]).project(this.camera);
      const el = this.labels[i];
      if (v.z > 1 || v.z < -1) { el.style.display = "none"; continue; }
      el.style.display = "";
      // A transform moves the label without a layout of the page (left/top would lay out every frame).
      el.style.transform = `translate(${((v.x + 1) / 2) * w}px, ${((1 - v.y) / 2) * h}px) translate(-50%, -160%)`;
    }
  }

  /** Frame the whole graph in both cameras. */
  fit() {
    const box = new THREE.Box3();
    const n = this.graph.ids.length;
    for (let i = 0; i < n; i++) box.expandByPoint(new THREE.Vector3(this.layout.x[i], this.layout.y[i], this.layout.z[i]));
    if (n === 0) box.set(new THREE.Vector3(-1, -1, -1), new THREE.Vector3(1, 1, 1));
    const centre = box.getCenter(new THREE.Vector3());
    const radius = Math.max(9, box.getSize(new THREE.Vector3()).length() / 2);
    this.extent = box;
    const distance = radius / Math.sin((this.perspective.fov * Math.PI) / 360);
    // A little from the side and above, so the depth (priority) reads as depth.
    const direction = new THREE.Vector3(0.45, -0.4, 1).normalize();
    this.perspective.position.copy(centre).addScaledVector(direction, distance * 0.95);
    this.perspective.near = Math.max(0.1, distance / 1000);
    this.perspective.far = distance * 10;
    this.perspective.updateProjectionMatrix();
    this.controls3d.target.copy(centre);
    this.controls3d.update();
    this.ortho.position.set(centre.x, centre.y, centre.z + radius * 4);
    this.ortho.zoom = 1;
    this.controls2d.target.copy(centre);
    this.fitOrtho();
    this.controls2d.update();
    this.markStill();
    this.invalidate();
  }

  /** Take the camera's present view as still: framing a graph is no motion to draw at low resolution. */
  markStill() {
    this.camera.updateMatrixWorld();
    this.seenView.copy(this.camera.matrixWorld);
    this.seenProjection.copy(this.camera.projectionMatrix);
  }

  fitOrtho() {
    const box = this.extent;
    const aspect = (this.canvas.clientWidth || 1) / (this.canvas.clientHeight || 1);
    const size = box ? box.getSize(new THREE.Vector3()) : new THREE.Vector3(2, 2, 2);
    const half = Math.max(size.y / 2, size.x / 2 / aspect) * 1.15 + 1;
    this.ortho.left = -half * aspect;
    this.ortho.right = half * aspect;
    this.ortho.top = half;
    this.ortho.bottom = -half;
    this.ortho.updateProjectionMatrix();
  }

  /** Switch between the 3D (perspective) and the 2D (orthographic) view of the same scene. */
  setMode(mode) {
    this.mode = mode === "2d" ? "2d" : "3d";
    this.camera = this.mode === "2d" ? this.ortho : this.perspective;
    this.controls3d.enabled = this.mode === "3d";
    this.controls2d.enabled = this.mode === "2d";
    this.markStill();
    this.invalidate();
    return this.mode;
  }

  /** The node under a point of the canvas (client coordinates), or -1. */
  pick(clientX, clientY) {
    if (!this.nodes) return -1;
    const rect = this.canvas.getBoundingClientRect();
    const pointer = new THREE.Vector2(
      ((clientX - rect.left) / rect.width) * 2 - 1,
      -((clientY - rect.top) / rect.height) * 2 + 1,
    );
    this.raycaster.setFromCamera(pointer, this.camera);
    const hit = this.raycaster.intersectObject(this.nodes, false)[0];
    return hit?.instanceId ?? -1;
  }

  /** Where node i is on the page (client coordinates). */
  screenOf(i) {
    const v = new THREE.Vector3(this.layout.x[i], this.layout.y[i], this.layout.z[i]).project(this.camera);
    const rect = this.canvas.getBoundingClientRect();
    return { x: rect.left + ((v.x + 1) / 2) * rect.width, y: rect.top + ((1 - v.y) / 2) * rect.height };
  }

  animate(now) {
    const t = now / 1000;
    if (this.halo?.visible) {
      const s = this.graph.size[this.bottleneck] * (1.6 + 0.35 * Math.sin(t * 5));
      this.halo.scale.set(s, s, s);
      this.halo.rotation.y = t * 0.6;
    }
    if (this.flowing.length) {
      const attr = this.particles.geometry.getAttribute("position");
      const { x, y, z } = this.layout;
      let p = 0;
      for (const k of this.flowing) {
        const a = this.graph.src[k];
        const b = this.graph.dst[k];
        for (let j = 0; j < PER_EDGE; j++) {
          const f = (t * 0.5 + j / PER_EDGE) % 1;
          attr.setXYZ(p++, x[a] + (x[b] - x[a]) * f, y[a] + (y[b] - y[a]) * f, z[a] + (z[b] - z[a]) * f);
        }
      }
      attr.needsUpdate = true;
      this.particles.geometry.setDrawRange(0, p);
    }
  }

  /** Render one frame now (and place the labels). */
  renderNow() {
    this.renderer.render(this.scene, this.camera);
    this.placeLabels();
    this.frames++;
    this.dirty = false;
  }

  /** The resolution for this frame (see MOVING_SCALE): `redraw` says whether the picture changed. */
  adaptResolution(now, redraw) {
    const camera = this.camera;
    camera.updateMatrixWorld();
    if (!camera.matrixWorld.equals(this.seenView) || !camera.projectionMatrix.equals(this.seenProjection)) {
      this.seenView.copy(camera.matrixWorld);
      this.seenProjection.copy(camera.projectionMatrix);
      this.movedAt = now;
    }
    const large = (this.graph?.ids.length ?? 0) > MAX_LABELS;
    if (large && ((redraw && now - this.lastFrame < SETTLE_MS) || this.flowing.length > 0)) this.busyAt = now;
    let scale = 1;
    if (now - this.movedAt < SETTLE_MS) scale = MOVING_SCALE;
    else if (now - this.busyAt < SETTLE_MS) scale = BUSY_SCALE;
    if (scale === this.scale) return;
    this.scale = scale;
    this.renderer.setPixelRatio(this.pixelRatio * scale);
    this.resize();
  }

  loop(now) {
    requestAnimationFrame(this.loop);
    const animated = (this.halo?.visible || this.flowing.length > 0) && now - this.lastFrame > 33;
    this.adaptResolution(now, this.changed);
    this.changed = false;
    if (!this.dirty && !animated) return;
    this.animate(now);
    this.lastFrame = now;
    this.renderNow();
  }

  /** Block until the GPU has drawn the last frame (a one-pixel read), for honest timings. */
  finish() {
    const gl = this.renderer.getContext();
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
  }
}
