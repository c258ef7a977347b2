// The 3D DAG universe: nodes as one InstancedMesh of spheres (a small graph) or one Points of discs (a
// large one), edges as one LineSegments, particles on the edges into running steps, a pulsing halo on the
// bottleneck, labels for small graphs. A handful of draw calls whatever the graph's size; a state change
// rewrites only the nodes' colour buffer.
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
// the pixels are most of a frame once the nodes are discs (rotating 1,000 nodes: 11.8 ms to render and
// finish a frame at full resolution, 4.8 at 0.4), and a moving picture hides the blur; slower devices than
// the 2-core machine measured, which holds 60 fps even at full resolution, get the margin.
const MOVING_SCALE = 0.6;
const BUSY_SCALE = 0.75;
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
    this.nodes?.setViewportHeight(this.renderer.getDrawingBufferSize(new THREE.Vector2()).y);
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
    this.nodes = n > MAX_LABELS ? new NodeDots(graph, layout) : new NodeSpheres(graph, layout);
    this.nodes.setViewportHeight(this.renderer.getDrawingBufferSize(new THREE.Vector2()).y);
    this.scene.add(this.nodes.object);

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
    for (const object of [this.nodes?.object, this.edges, this.particles, this.halo]) {
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
    this.nodes.paint(i, this.colour.set(COLOURS[display] ?? COLOURS.waiting));
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

  /**
   * The node under a point of the canvas (client coordinates), or -1: the nearest to the camera of the
   * nodes whose disc on the screen holds the point (3 px of slack, for the smallest ones).
   */
  pick(clientX, clientY) {
    if (!this.nodes) return -1;
    const rect = this.canvas.getBoundingClientRect();
    const camera = this.camera;
    camera.updateMatrixWorld();
    const perspective = camera.isPerspectiveCamera;
    // Pixels per world unit at depth 1 (perspective) or anywhere (orthographic), as NodeDots draws them.
    const unit = (camera.projectionMatrix.elements[5] * rect.height) / 2;
    const v = new THREE.Vector3();
    const { x, y, z } = this.layout;
    let best = -1;
    let bestDepth = Infinity;
    for (let i = 0; i < this.graph.ids.length; i++) {
      v.set(x[i], y[i], z[i]).applyMatrix4(camera.matrixWorldInverse);
      const depth = -v.z;
      if (perspective && depth <= camera.near) continue;
      const radius = (this.graph.size[i] * unit) / (perspective ? depth : 1) + 3;
      v.applyMatrix4(camera.projectionMatrix);
      const dx = rect.left + ((v.x + 1) / 2) * rect.width - clientX;
      const dy = rect.top + ((1 - v.y) / 2) * rect.height - clientY;
      if (dx * dx + dy * dy <= radius * radius && depth < bestDepth) {
        best = i;
        bestDepth = depth;
      }
    }
    return best;
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

/** The nodes of a small graph: an instanced icosphere each, of radius `graph.size[i]`. */
class NodeSpheres {
  constructor(graph, layout) {
    const n = graph.ids.length;
    const mesh = new THREE.InstancedMesh(
      new THREE.IcosahedronGeometry(1, 2), new THREE.MeshBasicMaterial({ color: 0xffffff }), Math.max(n, 1),
    );
    mesh.count = n;
    const matrix = new THREE.Matrix4();
    const scale = new THREE.Vector3();
    const position = new THREE.Vector3();
    const quaternion = new THREE.Quaternion();
    const waiting = new THREE.Color(COLOURS.waiting);
    for (let i = 0; i < n; i++) {
      position.set(layout.x[i], layout.y[i], layout.z[i]);
      const s = graph.size[i];
      scale.set(s, s, s);
      matrix.compose(position, quaternion, scale);
      mesh.setMatrixAt(i, matrix);
      mesh.setColorAt(i, waiting);
    }
    mesh.instanceMatrix.needsUpdate = true;
    if (mesh.instanceColor) mesh.instanceColor.needsUpdate = true;
    mesh.computeBoundingSphere();
    this.object = mesh;
  }

  paint(i, colour) {
    this.object.setColorAt(i, colour);
    this.object.instanceColor.needsUpdate = true;
  }

  setViewportHeight() {}
}

/**
 * The nodes of a large graph: one point each, drawn as a disc of the sphere's on-screen size. Software GL
 * pays per vertex: 1,000 instanced spheres were 60,000 vertices and most of a frame's time (rotating 1,000
 * nodes, render and finish: 15.9 ms at the moving resolution, 9.9 of them the spheres); a disc is one.
 * The colours are written as they are meant to appear (sRGB), with no conversion on the way out.
 */
class NodeDots {
  constructor(graph, layout) {
    const n = graph.ids.length;
    const position = new Float32Array(n * 3);
    const size = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      position[3 * i] = layout.x[i];
      position[3 * i + 1] = layout.y[i];
      position[3 * i + 2] = layout.z[i];
      size[i] = graph.size[i];
    }
    const geometry = new THREE.BufferGeometry();
    geometry.setAttribute("position", new THREE.BufferAttribute(position, 3));
    geometry.setAttribute("size", new THREE.BufferAttribute(size, 1));
    geometry.setAttribute("colour", new THREE.BufferAttribute(new Float32Array(n * 3), 3));
    this.uniforms = { viewportHeight: { value: 1 } };
    const material = new THREE.ShaderMaterial({
      uniforms: this.uniforms,
      vertexShader: `
        attribute float size;
        attribute vec3 colour;
        uniform float viewportHeight;
        varying vec3 vColour;
        void main() {
          vColour = colour;
          vec4 view = modelViewMatrix * vec4(position, 1.0);
          gl_Position = projectionMatrix * view;
          // A perspective projection divides by depth; an orthographic one (w = 1) does not.
          float depth = projectionMatrix[2][3] != 0.0 ? -view.z : 1.0;
          gl_PointSize = max(2.0, size * projectionMatrix[1][1] * viewportHeight / depth);
        }`,
      fragmentShader: `
        varying vec3 vColour;
        void main() {
          vec2 p = gl_PointCoord * 2.0 - 1.0;
          float r2 = dot(p, p);
          if (r2 > 1.0) discard;
          // A darker rim gives the disc a sphere's roundness; the centre is the state's own colour.
          gl_FragColor = vec4(vColour * (1.0 - 0.45 * r2 * r2), 1.0);
        }`,
    });
    this.object = new THREE.Points(geometry, material);
    this.colours = geometry.getAttribute("colour");
    this.srgb = { r: 0, g: 0, b: 0 };
    const waiting = new THREE.Color(COLOURS.waiting);
    for (let i = 0; i < n; i++) this.paint(i, waiting);
  }

  paint(i, colour) {
    const { r, g, b } = colour.getRGB(this.srgb, THREE.SRGBColorSpace);
    this.colours.setXYZ(i, r, g, b);
    this.colours.needsUpdate = true;
  }

  setViewportHeight(pixels) {
    this.uniforms.viewportHeight.value = pixels;
  }
}
