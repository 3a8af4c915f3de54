// optaas live view: a session's curves (polling its history) and a schedule designer whose
// forms — the optimizer and the schedule — are generated from the preview's request schema in
// /openapi.json (every optimizer type and every schedule the API knows), drawn by
// /v1/schedules/preview.
//
// The token is kept in sessionStorage (this tab only) and sent only in the Authorization header
// of fetch requests: never in a URL, so it cannot reach an access log or the browser history.
"use strict";

(() => {
  const STORAGE_KEY = "optaas.session";
  const POLL_MS = 1000;
  const PAGE_SIZE = 1000;
  const PREVIEW_DELAY_MS = 200;
  const COLORS = { lr: "#2458c6", loss: "#c0392b", grad_norm: "#1e8449", designer: "#7d3c98" };
  const INITIAL_SCHEDULE = {
    type: "warmup",
    warmup_steps: 100,
    then: { type: "cosine", total_steps: 900 },
  };
  const INITIAL_OPTIMIZER = null; // (none): the lr field gives the base rate
  const NO_OPTIMIZER = "";

  // -- HTTP ---------------------------------------------------------------------------------

  class Problem extends Error {
    constructor(status, document) {
      super((document && document.detail) || `HTTP ${status}`);
      this.status = status;
      this.document = document || {};
    }
  }

  async function api(path, { token, method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    const text = await response.text();
    const document = text ? JSON.parse(text) : null;
    if (!response.ok) throw new Problem(response.status, document);
    return document;
  }

  // -- small DOM helpers ----------------------------------------------------------------------

  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value !== undefined && value !== null) node.setAttribute(name, value);
    }
    node.append(...children);
    return node;
  }

  function showStatus(id, text, isError = false) {
    const node = document.getElementById(id);
    node.textContent = text;
    node.classList.toggle("error", isError);
  }

  // -- charts (uPlot) -------------------------------------------------------------------------

  function makeChart(containerId, label, color, xLabel) {
    const container = document.getElementById(containerId);
    const width = Math.max(320, container.clientWidth || 480);
    const options = {
      width,
      height: 220,
      scales: { x: { time: false } },
      axes: [{ label: xLabel }, { size: 70 }],
      series: [
        { label: xLabel },
        { label, stroke: color, width: 1.5, spanGaps: false, points: { show: false } },
      ],
    };
    return new uPlot(options, [[], []], container);
  }

  function fitCharts(charts) {
    for (const chart of Object.values(charts)) {
      const width = Math.max(320, chart.root.parentElement.clientWidth);
      chart.setSize({ width, height: 220 });
    }
  }

  // -- the session view -----------------------------------------------------------------------

  const live = {
    id: null,
    token: null,
    cursor: 0,
    timer: null,
    series: { step: [], lr: [], loss: [], grad_norm: [] },
    skipped: 0,
    changes: [],
    charts: {},
  };

  function resetSeries() {
    live.cursor = 0;
    live.series = { step: [], lr: [], loss: [], grad_norm: [] };
    live.skipped = 0;
    live.changes = [];
    for (const [name, chart] of Object.entries(live.charts)) chart.setData([[], []]);
    document.getElementById("changes").hidden = true;
  }

  function absorb(records) {
    for (const record of records) {
      live.cursor = record.seq;
      if (record.kind === "change") {
        live.changes.push(record);
      } else if (record.skipped) {
        live.skipped += 1;
      } else {
        live.series.step.push(record.step);
        live.series.lr.push(record.lr);
        live.series.loss.push(record.loss);
        live.series.grad_norm.push(record.grad_norm);
      }
    }
  }

  function redraw() {
    for (const [name, chart] of Object.entries(live.charts)) {
      chart.setData([live.series.step, live.series[name]]);
    }
    const list = document.querySelector("#changes ol");
    list.replaceChildren(
      ...live.changes.map((change) =>
        element(
          "li",
          {},
          `step ${change.step}: ` +
            Object.entries(change.changes)
              .map(([field, { old, new: now }]) => `${field} ${JSON.stringify(old)} → ${JSON.stringify(now)}`)
              .join(", "),
        ),
      ),
    );
    document.getElementById("changes").hidden = live.changes.length === 0;
  }

  function showSummary(view) {
    const summary = document.getElementById("session-summary");
    const fields = [
      ["name", view.name ?? "—"],
      ["optimizer", view.optimizer.type],
      ["schedule", view.schedule.type],
      ["step", view.step],
      ["next lr", view.lr],
      ["last loss", view.last_loss ?? "—"],
    ];
    summary.replaceChildren(
      ...fields.map(([term, value]) =>
        element("div", {}, element("dt", {}, term), element("dd", {}, String(value))),
      ),
    );
    summary.hidden = false;
  }

  async function poll() {
    const { id, token } = live;
    try {
      const view = await api(`/v1/sessions/${encodeURIComponent(id)}`, { token });
      let page;
      do {
        page = await api(
          `/v1/sessions/${encodeURIComponent(id)}/history?after=${live.cursor}&limit=${PAGE_SIZE}`,
          { token },
        );
        if (live.id !== id) return; // another session was opened meanwhile
        absorb(page.records);
      } while (page.next !== null);
      showSummary(view);
      redraw();
      const skipped = live.skipped ? `, ${live.skipped} skipped` : "";
      showStatus(
        "session-status",
        `${live.series.step.length} steps shown${skipped}; updated ${new Date().toLocaleTimeString()}`,
      );
      live.timer = setTimeout(poll, POLL_MS);
    } catch (error) {
      if (live.id !== id) return;
      const final = error instanceof Problem && (error.status === 401 || error.status === 404);
      showStatus("session-status", `${error.message}${final ? "" : " (retrying)"}`, true);
      if (!final) live.timer = setTimeout(poll, POLL_MS * 3);
    }
  }

  function openSession(id, token) {
    clearTimeout(live.timer);
    live.id = id;
    live.token = token;
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ id, token }));
    resetSeries();
    showStatus("session-status", "Opening…");
    poll();
  }

  function forgetSession() {
    clearTimeout(live.timer);
    live.id = live.token = null;
    sessionStorage.removeItem(STORAGE_KEY);
    resetSeries();
    document.getElementById("session-summary").hidden = true;
    document.getElementById("session-token").value = "";
    showStatus("session-status", "No session open.");
  }

  function setUpSessionView() {
    live.charts = {
      lr: makeChart("chart-lr", "lr", COLORS.lr, "step"),
      loss: makeChart("chart-loss", "loss", COLORS.loss, "step"),
      grad_norm: makeChart("chart-grad_norm", "grad norm", COLORS.grad_norm, "step"),
    };
    const form = document.getElementById("open-form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const id = document.getElementById("session-id").value.trim();
      const token = document.getElementById("session-token").value.trim();
      if (id && token) openSession(id, token);
    });
    document.getElementById("forget").addEventListener("click", forgetSession);
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    if (saved && saved.id && saved.token) {
      document.getElementById("session-id").value = saved.id;
      openSession(saved.id, saved.token);
    }
  }

  // -- the schedule designer: a form generated from the schema --------------------------------

  let schemas = {};

  function deref(schema) {
    while (schema && schema.$ref) schema = schemas[schema.$ref.split("/").pop()];
    return schema;
  }

  function isUnion(schema) {
    return Boolean(schema && schema.discriminator && schema.discriminator.mapping);
  }

  function variantsOf(union) {
    const variants = {};
    for (const [type, ref] of Object.entries(union.discriminator.mapping)) {
      variants[type] = deref({ $ref: ref });
    }
    return variants;
  }

  function clone(value) {
    return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
  }

  /** A field's starting value: what the caller had, else the schema's default, else its example. */
  function startingValue(schema, given) {
    if (given !== undefined) return given;
    if (schema.default !== undefined) return clone(schema.default);
    if (Array.isArray(schema.examples) && schema.examples.length) return clone(schema.examples[0]);
    return undefined;
  }

  /** `X | null` as X (a value left empty is null, the default of such fields). */
  function withoutNull(schema) {
    const members = schema.anyOf || [];
    const others = members.filter((member) => member.type !== "null");
    if (members.length === 2 && others.length === 1) {
      return { ...deref(others[0]), description: schema.description, default: schema.default };
    }
    return schema;
  }

  /** One schedule or optimizer: a type selector and the chosen type's fields, nested ones
   * included. With `optional`, a first choice `(none)` reads as undefined. */
  function renderUnion(union, value, path, legend, { optional = false } = {}) {
    const variants = variantsOf(union);
    const select = element("select", { "data-path": `${path}.type`, "aria-label": `${legend} type` });
    if (optional) select.append(element("option", { value: NO_OPTIMIZER }, "(none)"));
    for (const type of Object.keys(variants).sort()) select.append(element("option", { value: type }, type));
    select.value = value && value.type in variants ? value.type : "constant" in variants ? "constant" : select.options[0].value;
    const fields = element("div", { class: "fields" });
    const fieldset = element("fieldset", { class: "schedule", "data-path": path }, element("legend", {}, legend), select, fields);
    let readers = {};

    function build(current) {
      readers = {};
      fields.replaceChildren();
      const variant = variants[select.value];
      if (!variant) return; // (none)
      fieldset.title = variant.description || "";
      const required = new Set(variant.required || []);
      for (const [name, property] of Object.entries(variant.properties || {})) {
        if (name === "type") continue;
        const node = renderField(property, current ? current[name] : undefined, `${path}.${name}`, name, required.has(name));
        readers[name] = node.read;
        fields.append(node.element);
      }
    }

    select.addEventListener("change", () => build(undefined));
    build(value);
    return {
      element: fieldset,
      read() {
        if (!(select.value in variants)) return undefined;
        const spec = { type: select.value };
        for (const [name, read] of Object.entries(readers)) {
          const fieldValue = read();
          if (fieldValue !== undefined) spec[name] = fieldValue;
        }
        return spec;
      },
    };
  }

  /** A list of schedules (e.g. `sequential.schedules`): each one a nested form, add and remove. */
  function renderUnionList(union, value, path, name) {
    const items = element("div", { class: "items" });
    const entries = [];

    function add(itemValue) {
      const entry = { node: null, wrapper: null };
      const remove = element("button", { type: "button", "aria-label": `remove from ${name}` }, "−");
      entry.wrapper = element("div", { class: "list-item" });
      entries.push(entry);
      remove.addEventListener("click", () => {
        entries.splice(entries.indexOf(entry), 1);
        entry.wrapper.remove();
        relabel();
        items.dispatchEvent(new Event("change", { bubbles: true }));
      });
      entry.remove = remove;
      items.append(entry.wrapper);
      entry.build = (current) => {
        const index = entries.indexOf(entry);
        entry.node = renderUnion(union, current, `${path}.${index}`, `${name}[${index}]`);
        entry.wrapper.replaceChildren(entry.node.element, remove);
      };
      entry.build(itemValue);
    }

    function relabel() {
      // Paths and labels carry the index: rebuild the items after the one removed.
      for (const entry of entries) entry.build(entry.node.read());
    }

    const addButton = element("button", { type: "button" }, `add to ${name}`);
    addButton.addEventListener("click", () => {
      add({ type: "constant" });
      items.dispatchEvent(new Event("change", { bubbles: true }));
    });
    for (const itemValue of value || []) add(itemValue);
    return {
      element: element("div", { class: "nested", "data-path": path }, element("label", {}, name), items, addButton),
      read: () => entries.map((entry) => entry.node.read()),
    };
  }

  function renderField(property, given, path, name, required) {
    const schema = withoutNull(deref(property));
    const value = startingValue(schema, given);
    const title = schema.description || property.description || "";
    if (isUnion(schema)) {
      const node = renderUnion(schema, value || { type: "constant" }, path, name);
      return { element: element("div", { class: "nested" }, node.element), read: node.read };
    }
    if (schema.type === "array" && isUnion(deref(schema.items))) {
      return renderUnionList(deref(schema.items), value, path, name);
    }
    let input;
    let read;
    if (schema.type === "array") {
      // A list of numbers (or nulls, e.g. Adafactor's eps), typed as "1, 2, 3".
      input = element("input", { type: "text", size: 18, "data-path": path, placeholder: "1, 2, 3" });
      input.value = (value || []).map((item) => (item === null ? "null" : item)).join(", ");
      read = () => {
        const text = input.value.trim();
        if (!text) return required ? [] : undefined;
        return text
          .split(/[\s,]+/)
          .filter(Boolean)
          .map((item) => (item === "null" ? null : Number(item)));
      };
    } else if (Array.isArray(schema.enum) || schema.const !== undefined) {
      // A choice; an optional one (default null) starts empty, which reads as the default.
      const options = schema.enum || [schema.const];
      input = element("select", { "data-path": path });
      if (schema.default === null) input.append(element("option", { value: "" }, "—"));
      for (const option of options) input.append(element("option", { value: option }, option));
      if (value !== undefined && value !== null) input.value = value;
      read = () => (input.value === "" ? undefined : input.value);
    } else if (schema.type === "boolean") {
      input = element("input", { type: "checkbox", "data-path": path });
      input.checked = Boolean(value);
      read = () => input.checked;
    } else if (schema.type === "number" || schema.type === "integer") {
      input = element("input", {
        type: "number",
        step: schema.type === "integer" ? "1" : "any",
        "data-path": path,
        placeholder: required ? "required" : "",
      });
      if (value !== undefined && value !== null) input.value = String(value);
      read = () => (input.value === "" ? undefined : Number(input.value));
    } else {
      // Anything else: JSON typed by hand.
      input = element("input", { type: "text", "data-path": path });
      if (value !== undefined) input.value = JSON.stringify(value);
      read = () => (input.value === "" ? undefined : JSON.parse(input.value));
    }
    return { element: element("label", { title }, `${name} `, input), read };
  }

  const designer = { root: null, optimizer: null, chart: null, timer: null, sequence: 0 };

  function markInvalid(problem) {
    for (const node of document.querySelectorAll("#designer .invalid")) node.classList.remove("invalid");
    const paths = [];
    if (problem.field) paths.push(problem.field);
    for (const error of problem.errors || []) paths.push(error.loc.filter((part) => part !== "body").join("."));
    for (const path of paths) {
      const node = document.querySelector(`#designer [data-path="${CSS.escape(path)}"]`);
      if (node) node.classList.add("invalid");
    }
  }

  async function drawPreview() {
    const sequence = ++designer.sequence;
    let body;
    try {
      const optimizer = designer.optimizer.read();
      body = {
        schedule: designer.root.read(),
        steps: Number(document.getElementById("designer-steps").value || 1),
      };
      // An optimizer gives the base rate (its lr, or its type's default); else the lr field.
      const lrInput = document.getElementById("designer-lr");
      lrInput.disabled = optimizer !== undefined;
      if (optimizer !== undefined) body.optimizer = optimizer;
      else body.lr = Number(lrInput.value || 1);
    } catch (error) {
      showStatus("designer-status", `Not valid: ${error.message}`, true);
      return;
    }
    document.getElementById("designer-json").textContent = JSON.stringify(body.schedule, null, 1);
    try {
      const preview = await api("/v1/schedules/preview", { method: "POST", body });
      if (sequence !== designer.sequence) return; // a newer preview is on its way
      markInvalid({});
      const steps = preview.lr.map((_, t) => t);
      designer.chart.setData([steps, preview.lr]);
      const finite = preview.lr.filter((rate) => rate !== null);
      const estimated = preview.estimated
        ? `; ${body.optimizer.type} multiplies them by the step size it estimates as it runs`
        : "";
      showStatus(
        "designer-status",
        `${preview.lr.length} rates, from ${finite[0]} to ${finite[finite.length - 1]}; ` +
          `largest ${Math.max(...finite)}${estimated}`,
      );
    } catch (error) {
      if (sequence !== designer.sequence) return;
      if (error instanceof Problem) markInvalid(error.document);
      showStatus("designer-status", error.message, true);
    }
  }

  function schedulePreview() {
    clearTimeout(designer.timer);
    designer.timer = setTimeout(drawPreview, PREVIEW_DELAY_MS);
  }

  async function setUpDesigner() {
    designer.chart = makeChart("chart-designer", "lr", COLORS.designer, "t");
    document.getElementById("designer-lr").dataset.path = "lr";
    document.getElementById("designer-steps").dataset.path = "steps";
    try {
      schemas = (await api("/openapi.json")).components.schemas;
    } catch (error) {
      showStatus("designer-status", `The API's schema could not be read: ${error.message}`, true);
      return;
    }
    setOptimizer(undefined);
    const union = deref(deref(schemas.SchedulePreviewRequest).properties.schedule);
    designer.root = renderUnion(union, INITIAL_SCHEDULE, "schedule", "schedule");
    document.getElementById("designer-fields").replaceChildren(designer.root.element);
    const form = document.getElementById("designer-form");
    form.addEventListener("input", schedulePreview);
    form.addEventListener("change", schedulePreview);
    form.addEventListener("submit", (event) => event.preventDefault());
    await drawPreview();
  }

  /** The designer's optimizer form (every type the API knows), `(none)` when `optimizer` is null. */
  function setOptimizer(optimizer) {
    const property = deref(schemas.SchedulePreviewRequest).properties.optimizer;
    const union = deref((property.anyOf || [property]).find((member) => member.type !== "null"));
    const value = optimizer === undefined ? INITIAL_OPTIMIZER : optimizer;
    designer.optimizer = renderUnion(union, value, "optimizer", "optimizer", { optional: true });
    document.getElementById("designer-optimizer").replaceChildren(designer.optimizer.element);
  }

  /** Replace the designer's schedule (and optimizer: a spec, or null for none) — for scripts and
   * tests — and draw it. */
  async function design(schedule, optimizer) {
    if (optimizer !== undefined) setOptimizer(optimizer);
    const union = deref(deref(schemas.SchedulePreviewRequest).properties.schedule);
    designer.root = renderUnion(union, schedule, "schedule", "schedule");
    document.getElementById("designer-fields").replaceChildren(designer.root.element);
    await drawPreview();
  }

  // -- start ------------------------------------------------------------------------------------

  const ready = (async () => {
    setUpSessionView();
    await setUpDesigner();
    window.addEventListener("resize", () => fitCharts({ ...live.charts, designer: designer.chart }));
  })();

  window.optaasUi = {
    ready,
    charts: () => ({ ...live.charts, designer: designer.chart }),
    colors: COLORS,
    design,
    readSchedule: () => designer.root.read(),
    readOptimizer: () => designer.optimizer.read(),
  };
})();
