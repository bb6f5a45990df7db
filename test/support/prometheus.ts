/** Reading the service's /metrics endpoint in tests. */

/** The /metrics text of a running service (throws unless it answers 200). */
export async function scrape(port: number | null): Promise<string> {
  if (port === null) throw new Error("metrics are off for this service");
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return res.text();
}

/** The value of one sample in Prometheus text format, or null when no such sample exists. */
export function sampleOf(text: string, name: string, labels: Readonly<Record<string, string>> = {}): number | null {
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line.trim());
    if (!m || m[1] !== name) continue;
    const found: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) found[l[1]!] = l[2]!;
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(m[3]);
  }
  return null;
}

/** A counter's value; a labelled counter that has not been incremented yet has no sample and counts as 0. */
export const counterOf = (text: string, name: string, labels: Readonly<Record<string, string>> = {}): number => sampleOf(text, name, labels) ?? 0;

/** grpc_server_handled_total for one method and code. */
export const handled = (text: string, service: string, method: string, code: string): number =>
  counterOf(text, "grpc_server_handled_total", { service, method, code });
