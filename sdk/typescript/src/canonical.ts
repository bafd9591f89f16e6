/**
 * Canonical JSON: the one text of a value that signatures are made over.
 *
 * The same text as the provider's Python (`json.dumps(value, sort_keys=True,
 * separators=(",", ":"), ensure_ascii=False, allow_nan=False)`): object keys
 * sorted by code point, no whitespace, non-ASCII characters as themselves,
 * list order kept. Only strings, integers, booleans, null, arrays and plain
 * objects are taken: a float is spelled differently by Python (`1.0`) and
 * JavaScript (`1`), so a signature over one would not verify.
 */

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** The canonical JSON text of `value`; throws TypeError for anything without one. */
export function canonicalJson(value: JsonValue): string {
  return write(value, "value");
}

// Written out by hand rather than by JSON.stringify over a key-sorted copy:
// JavaScript objects put integer-like keys ("9", "10") first in numeric order.
function write(value: unknown, path: string): string {
  if (value === null || typeof value === "string" || typeof value === "boolean") {
    // JSON.stringify escapes a string as Python does with ensure_ascii=False.
    return JSON.stringify(value);
  }
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) {
      throw new TypeError(`${path} is ${value}: only integers have one JSON spelling across languages`);
    }
    return String(value);
  }
  if (Array.isArray(value)) {
    return `[${value.map((item, index) => write(item, `${path}[${index}]`)).join(",")}]`;
  }
  if (typeof value === "object" && isPlainObject(value)) {
    const members = Object.keys(value)
      .sort(byCodePoint)
      .map((key) => `${JSON.stringify(key)}:${write((value as Record<string, unknown>)[key], `${path}.${key}`)}`);
    return `{${members.join(",")}}`;
  }
  throw new TypeError(`${path} is a ${typeof value}, which has no canonical JSON form`);
}

function isPlainObject(value: object): boolean {
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** Python sorts str keys by code point; JavaScript's default sort compares UTF-16 units. */
function byCodePoint(a: string, b: string): number {
  const left = Array.from(a);
  const right = Array.from(b);
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const difference = left[i]!.codePointAt(0)! - right[i]!.codePointAt(0)!;
    if (difference !== 0) {
      return difference;
    }
  }
  return left.length - right.length;
}
