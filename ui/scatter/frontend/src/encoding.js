// Row sets between the browser and the server (ui/scatter/encoding.py is the Python side).
//
// A set of row indices out of n travels as {n, format, data}, data being base64:
//   "bits": a bitset, row r is bit (r % 8) of byte floor(r / 8), least significant bit first
//           (numpy.packbits(..., bitorder="little"));
//   "runs": the sorted rows as runs of consecutive indices, each run two unsigned LEB128
//           varints: its start minus the end of the previous run (0 for the first run), then
//           its length.
// encodeRows picks the shorter of the two.

const CHUNK = 0x8000;

export function toBase64(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += CHUNK) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK));
  }
  return btoa(text);
}

export function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** Packed bitset (ceil(n / 8) bytes) of sorted or unsorted rows. */
export function bitsFromRows(rows, n) {
  const bits = new Uint8Array(Math.ceil(n / 8));
  for (let i = 0; i < rows.length; i++) bits[rows[i] >> 3] |= 1 << (rows[i] & 7);
  return bits;
}

/** One byte per row (0 or 1) from a packed bitset. */
export function maskFromBits(bits, n) {
  const mask = new Uint8Array(n);
  for (let r = 0; r < n; r++) mask[r] = (bits[r >> 3] >> (r & 7)) & 1;
  return mask;
}

/** Sorted rows (Uint32Array) of the set bits of a one-byte-per-row mask. */
export function rowsFromMask(mask) {
  let count = 0;
  for (let r = 0; r < mask.length; r++) count += mask[r] ? 1 : 0;
  const rows = new Uint32Array(count);
  for (let r = 0, k = 0; r < mask.length; r++) if (mask[r]) rows[k++] = r;
  return rows;
}

function pushVarint(out, value) {
  while (value >= 0x80) {
    out.push((value & 0x7f) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
}

/** The "runs" bytes of sorted, distinct rows. */
export function runsFromRows(rows) {
  const out = [];
  let end = 0;
  for (let i = 0; i < rows.length;) {
    const start = rows[i];
    let j = i + 1;
    while (j < rows.length && rows[j] === rows[j - 1] + 1) j++;
    pushVarint(out, start - end);
    pushVarint(out, j - i);
    end = start + (j - i);
    i = j;
  }
  return Uint8Array.from(out);
}

export function rowsFromRuns(bytes, n) {
  const rows = [];
  let end = 0;
  let i = 0;
  const next = () => {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (i >= bytes.length) throw new Error('truncated run-length data');
      const byte = bytes[i++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
  };
  while (i < bytes.length) {
    const start = end + next();
    const length = next();
    if (start + length > n) throw new Error(`run past the last row (${start + length} > ${n})`);
    for (let r = start; r < start + length; r++) rows.push(r);
    end = start + length;
  }
  return Uint32Array.from(rows);
}

/** {n, format, data} for sorted, distinct rows out of n: the shorter of bits and runs. */
export function encodeRows(rows, n) {
  const runs = runsFromRows(rows);
  if (runs.length < Math.ceil(n / 8)) return { n, format: 'runs', data: toBase64(runs) };
  return { n, format: 'bits', data: toBase64(bitsFromRows(rows, n)) };
}

export function decodeRows(encoded) {
  const bytes = fromBase64(encoded.data);
  if (encoded.format === 'runs') return rowsFromRuns(bytes, encoded.n);
  if (encoded.format === 'bits') return rowsFromMask(maskFromBits(bytes, encoded.n));
  throw new Error(`unknown row encoding ${encoded.format}`);
}
