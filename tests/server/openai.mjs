// openai.mjs: drives a running `exsa serve` with the official `openai` npm package.
// Env: EXSA_URL (http://127.0.0.1:PORT/v1), OPENAI_PKG_DIR (the --prefix folder of the npm
// install). Prints one line per check: "ok NAME" or "not ok NAME: why", then "checks N" (how
// many ran); exits 1 if any failed.
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.OPENAI_PKG_DIR, 'package.json'));
const OpenAI = require('openai');
const client = new OpenAI({ baseURL: process.env.EXSA_URL, apiKey: 'unused', maxRetries: 0 });
let failed = 0, ran = 0;

async function check(name, fn) {
    ran++;
    try {
        await fn();
        console.log(`ok ${name}`);
    } catch (e) {
        failed++;
        console.log(`not ok ${name}: ${e && e.message ? e.message : e}`);
    }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }

const models = await client.models.list().catch(() => ({ data: [] }));
const model = models.data.length ? models.data[0].id : 'none';
const msgs = [{ role: 'user', content: 'Write a short poem about the sea.' }];

await check('models.list', async () => {
    assert(models.data.length === 1 && model.length > 0, `got ${JSON.stringify(models.data)}`);
});
await check('chat without streaming', async () => {
    const r = await client.chat.completions.create({ model, messages: msgs, max_tokens: 16, seed: 7 });
    assert(r.object === 'chat.completion', `object ${r.object}`);
    assert(r.choices[0].message.role === 'assistant', 'role');
    assert(['stop', 'length'].includes(r.choices[0].finish_reason), 'finish_reason');
    assert(r.usage && r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0, 'usage');
});
await check('chat streaming with usage', async () => {
    const s = await client.chat.completions.create({ model, messages: msgs, max_tokens: 12,
        stream: true, stream_options: { include_usage: true } });
    let first = null, finish = null, usage = null, text = '';
    for await (const ch of s) {
        if (!first) first = ch;
        if (ch.choices.length && ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
        if (ch.choices.length && ch.choices[0].delta.content) text += ch.choices[0].delta.content;
        if (ch.usage) usage = ch.usage;
    }
    assert(first && first.choices[0].delta.role === 'assistant', 'no role in the first delta');
    assert(finish === 'length' || finish === 'stop', `finish ${finish}`);
    assert(usage && usage.completion_tokens > 0, 'no usage chunk');
});
await check('completions', async () => {
    const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8 });
    assert(r.object === 'text_completion' && typeof r.choices[0].text === 'string', 'shape');
    assert(r.usage.completion_tokens > 0, 'usage');
});
await check('same seed twice gives the same text', async () => {
    const a = await client.chat.completions.create({ model, messages: msgs, max_tokens: 24,
        seed: 1234, temperature: 1.0 });
    const b = await client.chat.completions.create({ model, messages: msgs, max_tokens: 24,
        seed: 1234, temperature: 1.0 });
    assert(a.choices[0].message.content === b.choices[0].message.content, 'texts differ');
    assert(a.choices[0].message.content.length > 0, 'empty text');
});
await check('malformed body is a 400', async () => {
    try {
        await client.chat.completions.create({ model, messages: 'not a list' });
    } catch (e) {
        assert(e.status === 400, `status ${e.status}`);
        assert(e.error && e.error.message, 'no error message');
        return;
    }
    throw new Error('no error');
});
await check('8 concurrent streams all finish', async () => {
    const one = async (i) => {
        const s = await client.chat.completions.create({ model, max_tokens: 16 + i, stream: true,
            messages: [{ role: 'user', content: `Stream number ${i}` }] });
        let finish = null;
        for await (const ch of s) if (ch.choices.length && ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
        return finish;
    };
    const res = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map(one));
    assert(res.every((f) => f === 'stop' || f === 'length'), `finishes ${JSON.stringify(res)}`);
});

// embeddings.create: one input and a batch, float and base64 (the client decodes base64 into
// floats itself when it asked for it), the real model id in the reply.
async function checkEmbeddings() {
    await check('embeddings.create', async () => {
        const one = await client.embeddings.create({ model: 'text-embedding-3-small',
            input: 'The sea is calm tonight.' });
        assert(one.object === 'list' && one.data.length === 1, `shape ${JSON.stringify(one).slice(0, 200)}`);
        assert(one.model === model, `model ${one.model}`);
        const v = one.data[0].embedding;
        const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
        assert(v.length > 0 && Math.abs(norm - 1) < 1e-5, `norm ${norm}`);
        assert(one.usage.prompt_tokens > 0 && one.usage.total_tokens === one.usage.prompt_tokens, 'usage');
        const two = await client.embeddings.create({ model, input: ['The sea is calm tonight.', 'x'],
            encoding_format: 'float' });
        assert(two.data.length === 2 && two.data[1].index === 1, 'batch');
        assert(two.data[0].embedding.every((x, i) => Math.abs(x - v[i]) < 1e-5), 'batch != alone');
        const b64 = await client.embeddings.create({ model, input: 'The sea is calm tonight.',
            encoding_format: 'base64' });
        const raw = Buffer.from(b64.data[0].embedding, 'base64');
        const f = new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4);
        assert(f.length === v.length && f.every((x, i) => Math.abs(x - v[i]) < 1e-6), 'base64');
    });
}

// models.retrieve: the served id answers; an unknown id is a 404 the client raises.
async function checkModelsRetrieve() {
    await check('models.retrieve', async () => {
        const m = await client.models.retrieve(model);
        assert(m.id === model && m.object === 'model', `got ${JSON.stringify(m)}`);
        try {
            await client.models.retrieve('no-such-model');
        } catch (e) {
            assert(e.status === 404 && e.error && e.error.code === 'model_not_found', `status ${e.status}`);
            return;
        }
        throw new Error('no 404 for an unknown id');
    });
}

await checkEmbeddings();
await checkModelsRetrieve();
console.log(`checks ${ran}`);
process.exit(failed ? 1 : 0);
