#!/usr/bin/env node
// llama.cpp's prefill and decode tokens/s on a GGUF file, for the side-by-side benchmark with
// ds-run (bench/compare.sh). Uses the prebuilt CPU libllama of node-llama-cpp
// (tests/interop/install.sh), as tests/interop/load.mjs does; nothing is downloaded or built.
//
//   node bench/llama.mjs MODEL.gguf [--prompt N] [--gen N] [--threads N] [--runs N]
//
// The prompt is N token ids 2 + (i * 37) % 380 (the ids bench/run.sh gives ds-run), evaluated as
// one batch; then --gen tokens are generated greedily one at a time. Prints one JSON line per run:
// {"run", "prompt_tokens", "prompt_s", "prompt_tokens_per_s", "generated_tokens",
//  "generation_s", "generation_tokens_per_s"}.
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = "true";

const usage = (msg) => {
    if (msg) process.stderr.write(`llama.mjs: ${msg}\n`);
    process.stderr.write("usage: node bench/llama.mjs MODEL.gguf [--prompt N] [--gen N] [--threads N] [--runs N]\n");
    process.exit(2);
};

const o = { file: null, prompt: 64, gen: 32, threads: 2, runs: 1 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
        const v = Number(argv[++i]);
        if (!Number.isInteger(v) || v < 0) usage(`${a} needs a non-negative integer`);
        return v;
    };
    if (a === "--prompt") o.prompt = num();
    else if (a === "--gen") o.gen = num();
    else if (a === "--threads") o.threads = num();
    else if (a === "--runs") o.runs = num();
    else if (!a.startsWith("-") && !o.file) o.file = a;
    else usage(`unknown argument '${a}'`);
}
if (!o.file || o.prompt < 1 || o.threads < 1) usage();

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "tests", "interop", "package.json"));
const { getLlama, LlamaLogLevel } = await import(require.resolve("node-llama-cpp"));

const llama = await getLlama({
    gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true,
    progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: o.threads,
});
const model = await llama.loadModel({ modelPath: path.resolve(o.file), gpuLayers: 0, useMmap: true });
const tokens = Array.from({ length: o.prompt }, (_, i) => 2 + (i * 37) % 380);

for (let r = 1; r <= o.runs; r++) {
    const context = await model.createContext({
        contextSize: o.prompt + o.gen + 16, batchSize: o.prompt, sequences: 1,
        threads: { ideal: o.threads, min: o.threads }, flashAttention: false,
        ignoreMemorySafetyChecks: true,
    });
    const seq = context.getSequence();
    let t0 = process.hrtime.bigint();
    await seq.evaluateWithoutGeneratingNewTokens(tokens.slice(0, -1));
    const prompt_s = Number(process.hrtime.bigint() - t0) / 1e9;
    // generation: the last prompt token, then each generated one, one token per evaluation
    let n = 0;
    t0 = process.hrtime.bigint();
    if (o.gen > 0)
        for await (const _ of seq.evaluate(tokens.slice(-1), { temperature: 0 }))
            if (++n >= o.gen) break;
    const gen_s = Number(process.hrtime.bigint() - t0) / 1e9;
    process.stdout.write(JSON.stringify({
        run: r, prompt_tokens: o.prompt - 1, prompt_s, prompt_tokens_per_s: (o.prompt - 1) / prompt_s,
        generated_tokens: n, generation_s: gen_s, generation_tokens_per_s: n / gen_s,
    }) + "\n");
    await context.dispose();
}
await model.dispose();
await llama.dispose();
