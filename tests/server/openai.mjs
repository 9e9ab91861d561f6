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

// Tools, streamed tool calls and structured output (issue 10). The random-weight model calls a
// tool only when made to: a named tool_choice (constrained decoding) forces the call, and a
// json_schema response_format the shape of the content.
const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 10 },
        unit: { type: 'string', enum: ['c', 'f'] } }, required: ['city', 'unit'],
        additionalProperties: false } } }];
const named = { type: 'function', function: { name: 'get_weather' } };
const askWeather = [{ role: 'user', content: 'What is the weather in Paris?' }];
function checkArgs(call) {
    assert(call.type === 'function' && call.function.name === 'get_weather', `call ${JSON.stringify(call)}`);
    assert(typeof call.id === 'string' && call.id.startsWith('call_'), `id ${call.id}`);
    const args = JSON.parse(call.function.arguments);
    assert(typeof args.city === 'string' && args.city.length <= 10 && ['c', 'f'].includes(args.unit),
        `arguments ${call.function.arguments}`);
    return args;
}
async function checkTools() {
    let whole = null;
    await check('tool_calls with a named tool_choice', async () => {
        const r = await client.chat.completions.create({ model, messages: askWeather, tools,
            tool_choice: named, temperature: 1, seed: 11, max_tokens: 400 });
        const c = r.choices[0];
        assert(c.finish_reason === 'tool_calls', `finish ${c.finish_reason}`);
        assert(c.message.tool_calls.length === 1 && c.message.content === null, 'one call, no content');
        whole = checkArgs(c.message.tool_calls[0]);
    });
    await check('streamed tool call with the stream helper', async () => {
        const s = client.beta.chat.completions.stream({ model, messages: askWeather, tools,
            tool_choice: named, temperature: 1, seed: 11, max_tokens: 400 });
        const r = await s.finalChatCompletion();
        const c = r.choices[0];
        assert(c.finish_reason === 'tool_calls', `finish ${c.finish_reason}`);
        const args = checkArgs(c.message.tool_calls[0]);
        assert(JSON.stringify(args) === JSON.stringify(whole), 'stream != whole reply');
    });
    await check('response_format from a zod schema with the parse helper', async () => {
        const { z } = require('zod');
        const { zodResponseFormat } = require('openai/helpers/zod');
        const Pet = z.object({ name: z.string().max(10), age: z.number().int(),
            kind: z.enum(['cat', 'dog']), tags: z.array(z.string().max(5)).max(2) });
        const r = await client.beta.chat.completions.parse({ model, temperature: 1, seed: 5,
            max_tokens: 800, messages: [{ role: 'user', content: 'Describe a pet.' }],
            response_format: zodResponseFormat(Pet, 'pet') });
        const p = r.choices[0].message.parsed;
        assert(p && Pet.safeParse(p).success, `parsed ${JSON.stringify(p)}`);
    });
    await check('n and logprobs', async () => {
        const r = await client.chat.completions.create({ model, messages: msgs, max_tokens: 6,
            temperature: 0, n: 2, logprobs: true, top_logprobs: 3 });
        assert(r.choices.length === 2 && r.choices[1].index === 1, 'two choices');
        assert(r.choices[0].message.content === r.choices[1].message.content, 'greedy choices differ');
        const lp = r.choices[0].logprobs.content;
        assert(lp.length > 0 && lp.every((e) => e.top_logprobs.length === 3 &&
            e.top_logprobs[0].token === e.token), `logprobs ${JSON.stringify(lp).slice(0, 300)}`);
    });
}

await checkEmbeddings();
await checkModelsRetrieve();
await checkTools();
console.log(`checks ${ran}`);
process.exit(failed ? 1 : 0);
