// Validate a glTF/GLB file with the Khronos glTF-Validator (the reference implementation of the spec's rules).
// Usage: node validate-gltf.mjs FILE.glb   → prints the validator's JSON report; exit 1 when it finds errors.
import { readFileSync } from 'node:fs';
import validator from 'gltf-validator';

const file = process.argv[2];
if (!file) { console.error('usage: node validate-gltf.mjs FILE.glb'); process.exit(2); }
const report = await validator.validateBytes(new Uint8Array(readFileSync(file)), { maxIssues: 50 });
console.log(JSON.stringify(report, null, 1));
process.exit(report.issues.numErrors > 0 ? 1 : 0);
