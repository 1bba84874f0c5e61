#!/usr/bin/env node
// Interoperability probe: load a GGUF file with llama.cpp (the prebuilt libllama that the npm
// package node-llama-cpp ships) and report what llama.cpp made of it, as one JSON line on stdout.
//
//   node tests/interop/load.mjs FILE.gguf [options]
//   node tests/interop/load.mjs --version     (the versions, once the prebuilt binary has loaded)
//
//   --tokens 1,2,3        evaluate these token ids (no BOS added) and report the argmax per position
//   --logits              with --tokens: also print the logits of the last position (vocab order)
//   --reference REF.json  evaluate REF.json's "tokens", compare the argmax per position with its
//                         "argmax" list and, if REF.logits.f32 sits next to it, report the largest
//                         absolute logit difference; exit 3 when an argmax differs
//   --vocab-only          load only the vocabulary (no tensors)
//   --text STRING         tokenize STRING (no BOS, no special-token parsing) and print the ids
//   --vocab-test INP OUT  llama.cpp's tokenizer test (test-tokenizer-0): inputs in INP separated by
//                         lines "__ggml_vocab_test__", expected ids in OUT, one line per input;
//                         exit 3 when an input tokenizes differently
//   --tokenizer-vectors F  JSONL lines {"text", "ids"}: tokenize each text as Hugging Face does
//                         (special tokens recognised, no BOS added); exit 3 on a difference
//   --kv-type TYPE        KV cache type for evaluation (F32 or F16; default F32)
//   --threads N           evaluation threads (default 1, so results do not depend on the machine)
//   --log                 copy every llama.cpp log line to stderr
//                         (LOAD_MJS_DEBUG=1 in the environment adds JavaScript stack traces)
//
// Exit status: 0 ok, 1 the file failed to load or evaluate (llama.cpp's messages go to stderr),
// 2 usage error, 3 a check (--reference, --vocab-test, --tokenizer-vectors) found a difference.
// A GGML_ASSERT inside llama.cpp aborts the whole process (status 134, message on stderr).
//
// Note: node-llama-cpp first parses the GGUF header itself (in JavaScript) and then loads the file
// twice in llama.cpp (a no-alloc pass to size memory, then the real load), so a malformed header
// may be reported by node-llama-cpp's parser rather than by llama.cpp's gguf reader.
//
// Nothing is downloaded or compiled: the prebuilt CPU binary is used (build: "never",
// skipDownload), and the process fails if it cannot be loaded.

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = "true";

const USAGE = "usage: node load.mjs --version\n" +
    "       node load.mjs FILE.gguf [--vocab-only] [--text STRING] [--vocab-test INP OUT]\n" +
    "                   [--tokenizer-vectors FILE.jsonl]\n" +
    "                   [--tokens 1,2,3] [--logits] [--reference REF.json] [--kv-type F32|F16]\n" +
    "                   [--threads N] [--log]\n";

function usage(msg) {
    if (msg) process.stderr.write(`load.mjs: ${msg}\n`);
    process.stderr.write(USAGE);
    process.exit(2);
}

function parseArgs(argv) {
    const o = { file: null, tokens: null, logits: false, reference: null, vocabOnly: false,
        text: null, vocabTest: null, vectors: null, version: false, kvType: "F32", threads: 1, log: false };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) usage(`${a} needs an argument`);
            return argv[++i];
        };
        switch (a) {
            case "--tokens": {
                const s = next().trim();
                o.tokens = s === "" ? [] : s.split(",").map((t) => {
                    if (!/^\s*\d+\s*$/.test(t)) usage(`bad token id '${t}'`);
                    return Number(t);
                });
                break;
            }
            case "--logits": o.logits = true; break;
            case "--reference": o.reference = next(); break;
            case "--vocab-only": o.vocabOnly = true; break;
            case "--text": o.text = next(); break;
            case "--vocab-test": o.vocabTest = [next(), next()]; break;
            case "--tokenizer-vectors": o.vectors = next(); break;
            case "--kv-type": {
                o.kvType = next().toUpperCase();
                if (o.kvType !== "F32" && o.kvType !== "F16") usage("--kv-type must be F32 or F16");
                break;
            }
            case "--threads": {
                o.threads = Number(next());
                if (!Number.isInteger(o.threads) || o.threads < 1) usage("--threads needs a positive integer");
                break;
            }
            case "--log": o.log = true; break;
            case "--version": o.version = true; break;
            case "-h": case "--help": process.stdout.write(USAGE); process.exit(0);
            default:
                if (a.startsWith("-") && a !== "-") usage(`unknown option ${a}`);
                if (o.file != null) usage("only one FILE");
                o.file = a;
        }
    }
    if (o.file == null && !o.version) usage("no FILE");
    if (o.vocabOnly && (o.tokens != null || o.reference != null))
        usage("--tokens and --reference need the weights, not --vocab-only");
    return o;
}

const opts = parseArgs(process.argv.slice(2));

// Everything llama.cpp logs is kept: on failure its errors are the explanation, and its
// warnings tell which tensors it ignored (e.g. the MTP layer's blk.N.nextn.*).
const logs = [];
function logger(level, message) {
    const line = String(message).replace(/\n+$/, "");
    if (line === "") return;
    logs.push({ level, message: line });
    if (opts.log) process.stderr.write(`[llama.cpp ${level}] ${line}\n`);
}

// llama.cpp's log lines reach JavaScript asynchronously: give them a moment to arrive.
function settle(ms = 150) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

async function fail(what, err) {
    await settle();
    const shown = new Set();
    let unused = 0;
    for (const l of logs) {
        if (l.level !== "error" && l.level !== "fatal" && l.level !== "warn") continue;
        if (/^Failed simulating model resource usage/.test(l.message)) continue;
        if (shown.has(l.message)) continue;
        shown.add(l.message);
        if (/model has unused tensor/.test(l.message)) { unused++; continue; }
        process.stderr.write(`llama.cpp ${l.level}: ${l.message}\n`);
    }
    if (unused) process.stderr.write(`llama.cpp warn: (${unused} tensors reported as unused)\n`);
    process.stderr.write(`load.mjs: ${what}: ${err && err.message ? err.message : String(err)}\n`);
    if (process.env.LOAD_MJS_DEBUG && err && err.stack) process.stderr.write(`${err.stack}\n`);
    process.exit(1);
}

function argmaxOf(arr) {
    let best = 0;
    for (let i = 1; i < arr.length; i++) if (arr[i] > arr[best]) best = i;
    return best;
}

// Split an .inp file exactly as llama.cpp's tests/test-tokenizer-0.cpp does.
function readVocabTest(inpPath, outPath) {
    const raw = fs.readFileSync(inpPath, "utf8");
    const sep = "\n__ggml_vocab_test__\n";
    const inputs = [];
    let pos = 0;
    while (pos < raw.length) {
        const next = raw.indexOf(sep, pos);
        if (next < 0) { inputs.push(raw.slice(pos)); break; }
        inputs.push(raw.slice(pos, next));
        pos = next + sep.length;
    }
    const outLines = fs.readFileSync(outPath, "utf8").split("\n");
    if (outLines.length && outLines[outLines.length - 1] === "") outLines.pop();
    if (outLines.length !== inputs.length)
        throw new Error(`${inpPath} has ${inputs.length} inputs but ${outPath} has ${outLines.length} lines`);
    const expected = outLines.map((l) => {
        const s = l.trim();
        return s === "" ? [] : s.split(" ").map(Number);
    });
    return { inputs, expected };
}

async function main() {
    const require = createRequire(import.meta.url);
    let nlc, nlcVersion;
    try {
        nlc = await import("node-llama-cpp");
        const pj = path.join(path.dirname(require.resolve("node-llama-cpp")), "..", "package.json");
        nlcVersion = JSON.parse(fs.readFileSync(pj, "utf8")).version;
    } catch (err) {
        process.stderr.write(`load.mjs: node-llama-cpp is not installed (run tests/interop/install.sh): ${err.message}\n`);
        process.exit(1);
    }
    const { getLlama, LlamaLogLevel } = nlc;

    let llama;
    try {
        llama = await getLlama({
            gpu: false,
            build: "never",             // never compile llama.cpp
            skipDownload: true,         // never fetch its sources
            usePrebuiltBinaries: true,
            progressLogs: false,
            logLevel: LlamaLogLevel.debug,
            logger,
            maxThreads: Math.max(opts.threads, 1),
        });
    } catch (err) {
        await fail("cannot load the prebuilt llama.cpp binary", err);
    }

    const result = {
        ok: false,
        file: opts.file,
        node_llama_cpp: nlcVersion,
        llama_cpp: { repo: llama.llamaCppRelease.repo, release: llama.llamaCppRelease.release, build: llama.buildType },
        gpu: llama.gpu,
    };
    if (opts.version) {
        delete result.ok;
        delete result.file;
        result.node = process.version;
        result.system_info = llama.systemInfo;
        process.stdout.write(JSON.stringify(result) + "\n");
        await llama.dispose();
        process.exit(0);
    }

    let model;
    try {
        model = await llama.loadModel({
            modelPath: path.resolve(opts.file),
            gpuLayers: 0,
            vocabOnly: opts.vocabOnly,
            useMmap: false,             // read the file; no mmap surprises on odd filesystems
            checkTensors: !opts.vocabOnly,  // llama.cpp validates tensor data (NaN/Inf, bad blocks)
            ignoreMemorySafetyChecks: true,
        });
    } catch (err) {
        await fail(`cannot load ${opts.file}`, err);
    }

    const md = model.fileInfo.metadata;
    const arch = md?.general?.architecture;
    const am = model.fileInfo.architectureMetadata ?? {};
    let nVocab = 0;
    for (const _ of model.iterateAllTokens()) nVocab++;
    Object.assign(result, {
        ok: true,
        architecture: arch,
        type: model.typeDescription,
        vocab_type: model.vocabularyType,
        n_vocab: nVocab,
        n_ctx_train: model.trainContextSize,
        n_embd: model.embeddingVectorSize,
        block_count: am.block_count,
        nextn_predict_layers: am.nextn_predict_layers,
        n_tensors: model.fileInfo.totalTensorCount ?? model.fileInfo.tensorInfo?.length,
        bos: model.tokens.bos,
        eos: model.tokens.eos,
    });
    if (!opts.vocabOnly) result.size_bytes = model.size;

    // Tensors present in the file that llama.cpp did not use
    // ("model has unused tensor X (size = N bytes) -- ignoring"). node-llama-cpp loads the
    // file twice (a no-alloc "simulation" to size memory, then the real load), so lines repeat.
    await settle();
    const unused = new Set();
    for (const l of logs) {
        const m = /model has unused tensor (\S+)/.exec(l.message);
        if (m) unused.add(m[1]);
    }
    result.unused_tensors = [...unused];
    if (!opts.vocabOnly) {
        // (with --vocab-only the simulation's full load fails on the missing tensors: noise)
        const warnings = [...new Set(logs.filter((l) => l.level === "warn" || l.level === "error")
            .map((l) => l.message).filter((m) => !/model has unused tensor/.test(m)))];
        if (warnings.length) result.warnings = warnings.slice(0, 20);
    }
    const modelWarnings = model.getWarnings();
    if (modelWarnings.length) result.node_llama_cpp_warnings = modelWarnings;

    let status = 0;

    if (opts.text != null) {
        result.text = opts.text;
        result.ids = model.tokenize(opts.text, false);
    }

    if (opts.vocabTest) {
        let t;
        try {
            t = readVocabTest(opts.vocabTest[0], opts.vocabTest[1]);
        } catch (err) {
            process.stderr.write(`load.mjs: ${err.message}\n`);
            process.exit(2);
        }
        const failed = [];
        t.inputs.forEach((s, i) => {
            const got = model.tokenize(s, false);
            const exp = t.expected[i];
            if (got.length !== exp.length || got.some((v, j) => v !== exp[j]))
                failed.push({ index: i, text: s, expected: exp, got });
        });
        result.vocab_test = { n: t.inputs.length, passed: t.inputs.length - failed.length, failed };
        if (failed.length) status = 3;
    }

    if (opts.vectors) {
        const failed = [];
        let n = 0;
        for (const line of fs.readFileSync(opts.vectors, "utf8").split("\n")) {
            if (line.trim() === "") continue;
            const v = JSON.parse(line);
            n++;
            // special tokens are recognised in the text, as Hugging Face tokenizers do
            const got = model.tokenize(v.text, true);
            if (got.length !== v.ids.length || got.some((x, j) => x !== v.ids[j]))
                failed.push({ index: n - 1, text: v.text, expected: v.ids, got });
        }
        result.tokenizer_vectors = { n, passed: n - failed.length, failed: failed.slice(0, 10) };
        if (failed.length) status = 3;
    }

    let ref = null;
    if (opts.reference) {
        ref = JSON.parse(fs.readFileSync(opts.reference, "utf8"));
        if (opts.tokens == null) opts.tokens = ref.tokens;
    }

    if (opts.tokens != null && opts.tokens.length > 0) {
        const tokens = opts.tokens;
        for (const t of tokens)
            if (t >= nVocab) usage(`token id ${t} is not below n_vocab ${nVocab}`);
        let rows;
        try {
            const ctxSize = Math.max(256, tokens.length);
            const context = await model.createContext({
                contextSize: ctxSize,
                batchSize: Math.max(tokens.length, 1),
                sequences: 1,
                threads: opts.threads,
                flashAttention: false,
                experimentalKvCacheKeyType: opts.kvType,
                experimentalKvCacheValueType: opts.kvType,
                ignoreMemorySafetyChecks: true,
            });
            const seq = context.getSequence();
            const out = await seq.controlledEvaluate(
                tokens.map((t) => [t, { generateNext: { logits: true } }]));
            rows = Array.from({ length: tokens.length }, (_, i) => {
                const m = out[i]?.next?.logits;
                if (!m) throw new Error(`no logits for position ${i}`);
                const row = new Float64Array(nVocab).fill(Number.NaN);
                for (const [tok, v] of m) row[tok] = v;
                return row;
            });
            await context.dispose();
        } catch (err) {
            await fail("llama.cpp failed to evaluate the tokens", err);
        }
        result.n_tokens = tokens.length;
        result.kv_type = opts.kvType;
        result.argmax = rows.map(argmaxOf);
        if (rows.some((r) => r.some((v) => !Number.isFinite(v)))) result.non_finite_logits = true;
        if (opts.logits) result.logits_last = Array.from(rows[rows.length - 1], (v) => Number(v.toPrecision(9)));

        if (ref) {
            const expArg = ref.argmax ?? [];
            const mismatch = [];
            expArg.forEach((a, i) => { if (result.argmax[i] !== a) mismatch.push(i); });
            result.reference = {
                file: opts.reference,
                argmax: expArg,
                argmax_match: mismatch.length === 0 && expArg.length === tokens.length,
                argmax_mismatch_positions: mismatch,
            };
            const lf = opts.reference.replace(/\.json$/, ".logits.f32");
            if (lf !== opts.reference && fs.existsSync(lf)) {
                const buf = fs.readFileSync(lf);
                const refLogits = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
                const nv = ref.n_vocab ?? nVocab;
                if (nv === nVocab && refLogits.length === nv * tokens.length) {
                    let maxAbs = 0, maxRef = 0;
                    const perPos = [];
                    for (let i = 0; i < tokens.length; i++) {
                        let m = 0;
                        for (let j = 0; j < nv; j++) {
                            const r = refLogits[i * nv + j];
                            m = Math.max(m, Math.abs(rows[i][j] - r));
                            maxRef = Math.max(maxRef, Math.abs(r));
                        }
                        perPos.push(Number(m.toPrecision(4)));
                        maxAbs = Math.max(maxAbs, m);
                    }
                    result.reference.max_abs_logit_diff = Number(maxAbs.toPrecision(6));
                    result.reference.max_abs_ref_logit = Number(maxRef.toPrecision(6));
                    result.reference.max_abs_logit_diff_per_position = perPos;
                } else {
                    result.reference.logits_note = `${lf} does not hold [${tokens.length}][${nVocab}] floats`;
                }
            }
            if (!result.reference.argmax_match) status = 3;
        }
    }

    process.stdout.write(JSON.stringify(result) + "\n");
    await model.dispose();
    await llama.dispose();
    process.exit(status);
}

main().catch((err) => fail("unexpected error", err));
