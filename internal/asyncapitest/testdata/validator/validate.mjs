// Validates AsyncAPI documents with the official parser (@asyncapi/parser).
// Usage: node validate.mjs FILE...
// Prints every diagnostic of each file and a last line per file,
// "RESULT <file> valid" or "RESULT <file> invalid". A document is invalid
// when the parser gives none back or any diagnostic has severity "error"
// (0). Exits 1 when any file is invalid, 2 on a usage or I/O error. One
// process validates every file: loading the parser takes seconds.
import { readFile } from 'node:fs/promises';
import { Parser } from '@asyncapi/parser';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node validate.mjs FILE...');
  process.exit(2);
}
const severities = ['error', 'warning', 'info', 'hint'];
const parser = new Parser();
let failed = false;
for (const file of files) {
  let text;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    console.error(`read ${file}: ${err.message}`);
    process.exit(2);
  }
  const { document, diagnostics } = await parser.parse(text);
  let errors = 0;
  for (const d of diagnostics) {
    const severity = severities[d.severity] ?? String(d.severity);
    if (d.severity === 0) errors++;
    console.log(`${file}: ${severity}: ${d.code}: ${d.message} at /${(d.path ?? []).join('/')}`);
  }
  if (!document || errors > 0) {
    failed = true;
    console.log(`${file}: ${errors} error(s)${document ? '' : ', no document'}`);
    console.log(`RESULT ${file} invalid`);
  } else {
    console.log(`${file}: AsyncAPI ${document.version()}, ${document.channels().length} channel(s), ${document.operations().length} operation(s)`);
    console.log(`RESULT ${file} valid`);
  }
}
process.exit(failed ? 1 : 0);
