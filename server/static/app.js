// The upload page of `pinhole up`: pick or drop images, watch each upload and
// its processing, then see it served as a <picture> over its ThumbHash
// placeholder, with a snippet and URLs to copy. No build step: an ES module.

import { base64ToBytes, thumbHashToDataURL } from "./thumbhash.js";

// XMLHttpRequest, not fetch: only XHR reports upload progress.
const ANONYMOUS_UPLOAD_URL = "/v1/images";
// Several files at once, but not all at once: each keeps a useful share of the link.
const MAX_PARALLEL_UPLOADS = 3;
const POLL_FIRST_MS = 400;
const POLL_MAX_MS = 3000;

// The gallery's slot widths (app.css: 1, 2 or 3 columns in a 68rem page), so the
// browser picks the smallest rung of the ladder that fills a card.
const GALLERY_SIZES =
  "(min-width: 70rem) 21.4rem, (min-width: 56rem) calc(33.3vw - 1.4rem), " +
  "(min-width: 36rem) calc(50vw - 1.5rem), calc(100vw - 2rem)";
// The copied snippet does not know its page's layout: a Pinterest-like column.
const SNIPPET_SIZES = "(max-width: 474px) 100vw, 474px";
const PREVIEW_PRESET = "474x";
const FADE_IN_MS = 300; // app.css: .frame img transition
const MIN_FRAME_RATIO = 3 / 4;

const gallery = document.getElementById("gallery");
const empty = document.getElementById("empty");
const announcer = document.getElementById("announcer");
const input = document.getElementById("file");
const drop = document.getElementById("drop");
const cardTemplate = document.getElementById("card-template");
const uploadUrlNote = document.getElementById("upload-url-note");

/**
 * Where uploads go. With tokens configured the page holds none: it uploads
 * with a one-time upload URL (POST /v1/upload-urls) handed to it in the
 * fragment, `/#upload_url=<url>`, which never reaches a server log. Such a URL
 * takes one upload; a second file gets the server's upload-url-used. Without
 * one (`pinhole up`'s dev mode) uploads are anonymous, to /v1/images.
 */
function uploadTarget() {
  const given = new URLSearchParams(location.hash.slice(1)).get("upload_url");
  if (!given) return { url: ANONYMOUS_UPLOAD_URL, oneTime: false };
  // The page is served by the process that takes the upload (as for pollUrl):
  // its configured host name may differ from the address bar's.
  const url = new URL(given, location.href);
  const local = url.origin === location.origin ? url.href : location.origin + url.pathname;
  return { url: local, oneTime: true };
}
const UPLOAD = uploadTarget();
if (UPLOAD.oneTime && uploadUrlNote) uploadUrlNote.hidden = false;

// ---------------------------------------------------------------- helpers

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function humanBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MB`;
}

function escapeAttr(text) {
  return String(text)
    .replaceAll("&", "&amp;")
    .replaceAll('"', "&quot;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;");
}

/** Alt text from the file name: the best description the page has. */
function altFromName(name) {
  const stem = name.replace(/\.[^.]+$/, "");
  return stem.replace(/[-_]+/g, " ").trim() || "Uploaded image";
}

let announceTimer = 0;
/** One polite live region for the whole page; cards' own text is not live. */
function announce(text) {
  clearTimeout(announceTimer);
  announcer.textContent = "";
  // A fresh text node after a tick, so repeating a message is announced again.
  announceTimer = setTimeout(() => {
    announcer.textContent = text;
  }, 50);
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null; // not JSON: a proxy's error page, an empty body
  }
}

/** The server's JSON error `{"error": {"code", "message"}}`, or a stand-in. */
function errorFrom(status, text) {
  const body = parseJson(text);
  if (body && body.error && body.error.message) {
    return { code: String(body.error.code || "error"), message: String(body.error.message) };
  }
  if (status === 0) {
    return { code: "network-error", message: "The upload did not reach the server." };
  }
  return { code: `http-${status}`, message: `The server answered HTTP ${status}.` };
}

/**
 * Where to poll a manifest. The page is served by the process that took the
 * upload (`pinhole up`), so its status path is asked of this origin: the
 * configured public host name (say localhost) may differ from the one in the
 * address bar (say 127.0.0.1), and the status API sends no CORS headers.
 */
function pollUrl(statusUrl) {
  const url = new URL(statusUrl, location.href);
  return url.origin === location.origin ? url.href : location.origin + url.pathname;
}

function posterFormat(manifest) {
  return manifest.has_alpha ? "png" : "jpeg";
}

/** The <img> fallback: an animated image's is its animated GIF. */
function fallbackFormat(manifest) {
  return manifest.animated ? "gif" : posterFormat(manifest);
}

/**
 * The <source>s, best first. An animated image plays as animated WebP, else
 * GIF (its AVIF and JPEG/PNG are the still poster); with reduced motion asked
 * for, the poster comes first.
 */
function sourceTypes(manifest) {
  const srcset = manifest.srcset || {};
  const poster = posterFormat(manifest);
  const still = manifest.animated
    ? [{ fmt: poster, media: "(prefers-reduced-motion: reduce)" }]
    : [{ fmt: "avif" }];
  const rest = manifest.animated ? ["webp", "gif"] : ["webp", poster];
  return [...still, ...rest.map((fmt) => ({ fmt }))]
    .filter(({ fmt }) => srcset[fmt])
    .map(({ fmt, media }) => ({ fmt, media, type: `image/${fmt}`, srcset: srcset[fmt] }));
}

// ---------------------------------------------------------------- copying

/** navigator.clipboard where there is one (secure contexts), else a textarea. */
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // denied or unfocused: try the old way
    }
  }
  const active = document.activeElement;
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  area.remove();
  if (active instanceof HTMLElement) active.focus();
  return copied;
}

function pictureSnippet(manifest, alt) {
  const sources = sourceTypes(manifest).map(
    ({ type, srcset, media }) =>
      `  <source${media ? ` media="${escapeAttr(media)}"` : ""} type="${type}"` +
      ` srcset="${escapeAttr(srcset)}" sizes="${SNIPPET_SIZES}">`,
  );
  const fallback = manifest.variants.find(
    (v) => v.preset === PREVIEW_PRESET && v.format === fallbackFormat(manifest),
  );
  const src = fallback ? fallback.url : manifest.urls[PREVIEW_PRESET];
  return [
    "<picture>",
    ...sources,
    `  <img src="${escapeAttr(src)}" width="${manifest.width}" height="${manifest.height}"` +
      ` alt="${escapeAttr(alt)}" loading="lazy" decoding="async">`,
    "</picture>",
  ].join("\n");
}

function urlList(manifest) {
  return Object.values(manifest.urls).join("\n");
}

// ---------------------------------------------------------------- a card per file

class Card {
  constructor(file, before) {
    this.file = file;
    this.alt = altFromName(file.name);
    const fragment = cardTemplate.content.cloneNode(true);
    this.el = fragment.querySelector(".card");
    this.frame = this.el.querySelector(".frame");
    this.frameNote = this.el.querySelector(".frame-note");
    this.meta = this.el.querySelector(".meta");
    this.progress = this.el.querySelector(".progress");
    this.percent = this.el.querySelector(".percent");
    this.status = this.el.querySelector(".status");
    this.actions = this.el.querySelector(".actions");
    this.code = this.el.querySelector(".code");
    this.el.querySelector(".name").textContent = file.name;
    this.el.dataset.name = file.name;
    this.progress.setAttribute("aria-label", `Upload of ${file.name}`);
    this.meta.textContent = humanBytes(file.size);
    this.setState("queued", "Waiting to upload…");
    gallery.insertBefore(this.el, before);
    empty.hidden = true;
  }

  setState(state, text) {
    this.el.dataset.state = state;
    this.status.textContent = text;
    this.status.classList.toggle("error", state === "error" || state === "failed");
  }

  setProgress(fraction) {
    const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
    this.progress.value = pct;
    this.percent.textContent = `${pct}%`;
    if (this.el.dataset.state === "uploading") this.status.textContent = `Uploading… ${pct}%`;
  }

  showError(error, state = "error", prefix = "Not uploaded") {
    this.setState(state, prefix === "Not uploaded" ? error.message : `${prefix}: ${error.message}`);
    this.el.dataset.errorCode = error.code;
    this.frame.classList.remove("working");
    this.frame.classList.add("broken");
    this.frameNote.textContent = error.code;
    announce(`${this.file.name}: ${prefix.toLowerCase()}. ${error.message}`);
  }

  showManifest(manifest) {
    this.el.dataset.id = manifest.id;
    const kind = manifest.source_format ? manifest.source_format.toUpperCase() : "";
    this.meta.textContent = [
      `${manifest.width} × ${manifest.height}`,
      kind,
      humanBytes(this.file.size),
    ]
      .filter(Boolean)
      .join(" · ");
    // The image's own shape, but no taller than 3:4: a portrait does not fill the screen.
    const ratio = Math.max(manifest.width / manifest.height, MIN_FRAME_RATIO);
    this.frame.style.aspectRatio = String(ratio);
  }

  showProcessing(manifest) {
    this.showManifest(manifest);
    this.setState("processing", `Processing: rendering ${manifest.variants.length} variants…`);
    this.frame.classList.add("working");
  }

  showFailed(manifest) {
    this.showManifest(manifest);
    const failure = manifest.failure || { code: "failed", message: "Processing failed." };
    this.showError(failure, "failed", "Processing failed");
  }

  showReady(manifest, duplicate) {
    this.showManifest(manifest);
    this.frame.classList.remove("working");
    this.setPlaceholder(manifest);
    this.frame.append(this.picture(manifest));
    this.setState("ready", duplicate ? "Ready (uploaded before)." : "Ready.");
    this.showCode(manifest);
    announce(`${this.file.name}: ready.`);
  }

  /** The ThumbHash as the frame's background; its average colour if it cannot be decoded. */
  setPlaceholder(manifest) {
    const placeholder = manifest.placeholder;
    if (!placeholder) return;
    this.frame.style.backgroundColor = placeholder.average_color;
    this.frame.dataset.placeholder = "average-color";
    if (!placeholder.thumbhash) return;
    try {
      const url = thumbHashToDataURL(base64ToBytes(placeholder.thumbhash));
      this.frame.style.backgroundImage = `url("${url}")`;
      this.frame.dataset.placeholder = "thumbhash";
    } catch (err) {
      console.warn("ThumbHash not decoded; showing the average colour", err);
    }
  }

  picture(manifest) {
    const picture = document.createElement("picture");
    for (const { type, srcset, media } of sourceTypes(manifest)) {
      const source = document.createElement("source");
      if (media) source.media = media;
      source.type = type;
      source.srcset = srcset;
      source.sizes = GALLERY_SIZES;
      picture.append(source);
    }
    const img = document.createElement("img");
    img.alt = this.alt;
    img.width = manifest.width;
    img.height = manifest.height;
    img.decoding = "async";
    // Only a browser without <picture> reaches these: let the server negotiate.
    img.sizes = GALLERY_SIZES;
    if (manifest.srcset.auto) img.srcset = manifest.srcset.auto;
    img.src = manifest.urls[PREVIEW_PRESET];
    img.addEventListener("load", () => {
      this.frame.classList.add("loaded");
      // The placeholder stays behind the fade-in, then goes: it would show
      // through transparent pixels.
      let settled = false;
      const settle = () => {
        if (settled) return;
        settled = true;
        this.frame.classList.add("settled");
        if (manifest.has_alpha) this.frame.classList.add("alpha");
        this.el.dataset.loaded = "true";
      };
      img.addEventListener("transitionend", settle, { once: true });
      setTimeout(settle, FADE_IN_MS + 100); // no transition (reduced motion), or none reported
    });
    img.addEventListener("error", () => {
      this.frame.classList.add("broken");
      this.frameNote.textContent = "not loaded";
      this.setState("error", "The image was processed but could not be loaded.");
    });
    picture.append(img);
    return picture;
  }

  showCode(manifest) {
    const snippet = pictureSnippet(manifest, this.alt);
    const urls = urlList(manifest);
    this.el.querySelector(".snippet").textContent = snippet;
    const list = this.el.querySelector(".urls");
    list.replaceChildren(
      ...Object.entries(manifest.urls).map(([preset, url]) => {
        const item = document.createElement("li");
        const link = document.createElement("a");
        link.href = url;
        link.textContent = url;
        // Every configured preset, with the size it renders this image at.
        const sized = (manifest.variants || []).find((v) => v.preset === preset);
        const size = sized ? ` (${sized.width}×${sized.height})` : "";
        item.append(`${preset}${size}: `, link);
        return item;
      }),
    );
    const copySnippet = this.el.querySelector(".copy-snippet");
    const copyUrls = this.el.querySelector(".copy-urls");
    copySnippet.setAttribute("aria-label", `Copy the <picture> snippet for ${this.file.name}`);
    copyUrls.setAttribute("aria-label", `Copy the URLs of ${this.file.name}`);
    copySnippet.addEventListener("click", () => this.copy(copySnippet, snippet, "Snippet"));
    copyUrls.addEventListener("click", () => this.copy(copyUrls, urls, "URLs"));
    this.actions.hidden = false;
    this.code.hidden = false;
  }

  async copy(button, text, what) {
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    if (await copyText(text)) {
      button.textContent = "Copied ✓";
      announce(`${what} for ${this.file.name} copied to the clipboard.`);
    } else {
      // Last resort: show the text for a manual copy.
      this.code.open = true;
      button.textContent = "Copy failed";
      announce(`Could not copy. The ${what.toLowerCase()} are shown below to copy by hand.`);
    }
    setTimeout(() => {
      button.textContent = label;
    }, 2000);
  }
}

// ---------------------------------------------------------------- the flow

function send(file, card) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", UPLOAD.url);
    // The server sniffs the bytes; a non-image type would only earn a 415 about headers.
    const type = file.type.startsWith("image/") ? file.type : "application/octet-stream";
    xhr.setRequestHeader("Content-Type", type);
    xhr.setRequestHeader("Accept", "application/json");
    // Upload listeners must be attached before send() or no upload events fire.
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && event.total > 0) card.setProgress(event.loaded / event.total);
    });
    xhr.upload.addEventListener("load", () => card.setProgress(1));
    xhr.addEventListener("load", () => resolve({ status: xhr.status, text: xhr.responseText }));
    xhr.addEventListener("error", () => resolve({ status: 0, text: "" }));
    xhr.addEventListener("abort", () => resolve({ status: 0, text: "" }));
    card.setState("uploading", "Uploading… 0%");
    xhr.send(file);
  });
}

/** Poll the status URL until the image is no longer pending. */
async function settle(manifest) {
  let delay = POLL_FIRST_MS;
  while (manifest.status === "pending") {
    await sleep(delay);
    delay = Math.min(POLL_MAX_MS, delay * 1.5);
    let response;
    let text;
    try {
      response = await fetch(pollUrl(manifest.status_url), {
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      text = await response.text();
    } catch {
      continue; // a blip; the image is durable, keep asking
    }
    const body = parseJson(text);
    if (response.ok && body && body.status) {
      manifest = body;
    } else if (response.status >= 400 && response.status < 500) {
      return { error: errorFrom(response.status, text) };
    }
  }
  return { manifest };
}

async function handleFile(file, card) {
  await uploadSlot();
  let reply;
  try {
    reply = await send(file, card);
  } finally {
    releaseSlot();
  }
  if (reply.status !== 200 && reply.status !== 202) {
    card.showError(errorFrom(reply.status, reply.text));
    return;
  }
  // No setProgress(1) here: the bar shows only what XHR reported sending.
  let manifest = parseJson(reply.text);
  if (!manifest || !manifest.status) {
    card.showError({ code: "bad-reply", message: "The server's reply was not a manifest." });
    return;
  }
  const duplicate = reply.status === 200;
  if (manifest.status === "pending") {
    card.showProcessing(manifest);
    const settled = await settle(manifest);
    if (settled.error) {
      card.showError(settled.error, "error", "Status unavailable");
      return;
    }
    manifest = settled.manifest;
  }
  if (manifest.status === "ready") card.showReady(manifest, duplicate);
  else card.showFailed(manifest);
}

let running = 0;
const waiting = [];
function uploadSlot() {
  if (running < MAX_PARALLEL_UPLOADS) {
    running++;
    return Promise.resolve();
  }
  return new Promise((resolve) => waiting.push(resolve));
}
function releaseSlot() {
  const next = waiting.shift();
  if (next) next();
  else running--;
}

function takeFiles(fileList) {
  const files = [...fileList];
  if (!files.length) return;
  announce(files.length === 1 ? `Uploading ${files[0].name}.` : `Uploading ${files.length} files.`);
  // Newest batch first, each batch in the order it was picked.
  const first = gallery.firstElementChild;
  for (const file of files) {
    const card = new Card(file, first);
    handleFile(file, card).catch((err) => console.error("upload of", file.name, "failed", err));
  }
}

// ---------------------------------------------------------------- picking and dropping

input.addEventListener("change", () => {
  takeFiles(input.files);
  input.value = ""; // picking the same file again is a new upload
});

// The whole zone opens the picker; the label and input already do on their own.
drop.addEventListener("click", (event) => {
  if (event.target === drop || event.target.closest(".drop-icon, .drop-title, .drop-or, .hint")) {
    input.click();
  }
});

function carriesFiles(event) {
  return event.dataTransfer && [...event.dataTransfer.types].includes("Files");
}

let dragDepth = 0;
drop.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth++;
  drop.classList.add("over");
});
drop.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
});
drop.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) drop.classList.remove("over");
});
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  drop.classList.remove("over");
  takeFiles(event.dataTransfer.files);
});

// A file dropped beside the zone must not replace the page with the image.
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (event) => {
    if (carriesFiles(event) && !drop.contains(event.target)) {
      event.preventDefault();
      if (type === "dragover") event.dataTransfer.dropEffect = "none";
    }
  });
}
