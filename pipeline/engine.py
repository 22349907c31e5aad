"""The one model serving both roles: its encodings, the model lock, sentiment and chat."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from . import batch, chat_format, packing
from .calibration import BiasCache, model_fingerprint
from .chat import BetweenTokens, ChatStream, GenerationCounts, trim_history
from .errors import UserInputError
from .loading import load_model
from .messages import chars_for_tokens, limit_in_chars, refusal
from .iteration import last
from .growing_cache import GROWTH_TOKENS, GrowingCache, release_freed_memory
from .kv_store import ConversationCache, Taken
from .model_lock import ModelLock
from .request import MAX_CHARS_PER_TOKEN, Request, prepare
from .routing import Mode
from .sentiment import Sentiment, SentimentScorer
from .settings import Settings

log = logging.getLogger(__name__)

# Weights timed to decide whether packing pays on this CPU (Engine._packing_decision): more than a
# server CPU's last-level cache, so they stream from memory as in a real forward.
PACKING_PROBE_BYTES = 128 << 20
# Share of the model's time spent on one-row forwards (decoding) that the packing decision assumes: a
# chat reply decodes one row at a time for far longer than its prefill or a label reads many rows, and
# longer replies decode for longer still (the figures behind it: bench/README.md, "Figures the code rests on").
ONE_ROW_SHARE = 0.85
# Packing is kept only when it pays on that mix by more than the probe's noise: it costs start-up time
# (reordering every weight), the same probe varies from one start to the next on a shared machine, and
# whether it pays depends on the CPU (bench.packing; bench/README.md has the measured ratios).
PACKING_MIN_GAIN = 1.05
# Under this, a probe is taken for a burst of load rather than the kernels (the same FP32 arithmetic on
# the same weights), and run once more: bursts make packing look far slower than any packed kernel
# measured on any CPU so far (bench/README.md).
PACKING_IMPLAUSIBLE = 0.7


class Engine(GenerationCounts):
    """One loaded model that classifies sentiment and chats, one call at a time.

    The model runs one forward at a time (pipeline.model_lock): on a small CPU two interleaved forwards
    are no faster than two in a row. Callers may use it from any thread. A chat stream holds the model
    from its prefill to its last token, but lets a label that is waiting run between two tokens.
    """

    def __init__(self, model, tokenizer, settings: Settings):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.model_name = Path(settings.model_dir).name
        super().__init__()
        self._lock = ModelLock()
        self.context_window = int(getattr(model.config, "max_position_embeddings", 32768))
        self.generation_config = self._generation_config()
        self.eos_ids = set(self.generation_config.eos_token_id)
        # Layers are packed before the scorer caches its prefix, so the cache comes from the same
        # kernels as every request; the head after, so the scorer copies its two rows from a dense one.
        pack, pack_head, self.linear_path = self._packing_decision(model, settings)
        self.bias_cache = BiasCache(settings.model_dir, model_fingerprint(model))  # the weights before packing
        self.packed_linears = packing.pack_decoder_linears(model) if pack else 0
        with self._lock.hold():
            started = time.perf_counter()
            self.sentiment = SentimentScorer(model, tokenizer, settings.sentiment_prompt, cache=self.bias_cache)
        # The calibration is this checkpoint's own (pipeline/calibration.py): its cost and bias belong in the log.
        log.info("sentiment: prefix cached, %s calibration bias %s (%s), in %.1f s", settings.sentiment_prompt.calibration,
                 [round(b, 3) for b in self.sentiment.bias.tolist()], self.sentiment.bias_source,
                 time.perf_counter() - started)
        if pack_head and packing.pack_output_head(model):
            self.packed_linears += 1
        log.info("linear layers: %s", self.linear_path)
        self.conversations = ConversationCache(int(settings.kv_cache_mb * 2**20)) if settings.kv_cache_mb else None
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        # FP32 keys and values of every layer, per token: what a conversation's cache costs.
        self.kv_bytes_per_token = config.num_hidden_layers * 2 * kv_heads * head_dim * 4
        self._chat_system_ids = chat_format.encode_messages(
            tokenizer, [{"role": "system", "content": settings.chat_system_prompt}], add_generation_prompt=False)
        # Template tokens around one message (e.g. "<|im_start|>user\n" ... "<|im_end|>\n").
        pieces = chat_format.encode_pieces(
            tokenizer, [{"role": "system", "content": "x"}, {"role": "user", "content": "x"}], add_generation_prompt=False)
        self._message_overhead = len(pieces[2]) + len(pieces[4])

    @staticmethod
    def _packing_decision(model, settings: Settings) -> tuple[bool, bool, str]:
        """(pack the decoder's linear layers, pack the output head, the path taken and why: load line, /healthz)."""
        if settings.pack_weights is False:
            return False, False, "torch F.linear (PACK_WEIGHTS=false)"
        check = packing.packing_check()
        if not check.available:
            return False, False, f"torch F.linear (oneDNN packing failed its self-check: {check.reason})"
        if settings.pack_weights:
            return True, True, "oneDNN packed FP32 (self-check passed; PACK_WEIGHTS=true)"
        # The widest projection of each layer, until they are well past a CPU cache (~128 MB here).
        weights, size = [], 0
        for layer in model.base_model.layers:
            linears = [m for m in layer.modules() if type(m) is torch.nn.Linear and m.weight.dtype == torch.float32]
            if not linears or size > PACKING_PROBE_BYTES:
                break
            weights.append(max(linears, key=lambda m: m.weight.numel()).weight)
            size += weights[-1].numel() * 4
        probe = packing.packing_gain(weights)
        second = ""
        if probe.weighted(ONE_ROW_SHARE) < PACKING_IMPLAUSIBLE:
            # Load only ever slows a kernel down, so the better of two probes is the truer one: a burst of
            # load on shared cores once made packing look 0.51x here (1 row: packed 24.4 ms, F.linear 5.6 ms).
            again = packing.packing_gain(weights)
            if again.weighted(ONE_ROW_SHARE) > probe.weighted(ONE_ROW_SHARE):
                probe = again
            second = ", best of two probes"
        gain = probe.weighted(ONE_ROW_SHARE)
        rows = ", ".join(f"{n} row{'s' if n > 1 else ''} {x:.2f}x" for n, x in probe.speedup.items())
        why = f"{gain:.2f}x as fast as F.linear with {ONE_ROW_SHARE:.0%} of the time at 1 row ({rows}){second}: {probe.measured}"
        if gain < PACKING_MIN_GAIN:
            return False, False, f"torch F.linear (oneDNN packing would run {why})"
        # The output head only ever runs one row (the next token's logits; sentiment copies a few rows).
        head = probe.speedup[1] >= 1
        return True, head, f"oneDNN packed FP32{'' if head else ', output head in torch layout'} (self-check passed; {why})"

    def _generation_config(self):
        config = copy.deepcopy(self.model.generation_config)
        s = self.settings
        for name in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty"):
            if getattr(s, name) is not None:
                setattr(config, name, getattr(s, name))
        eos = config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        for token in ("<|im_end|>", "<|endoftext|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id and token_id not in eos:
                eos.append(token_id)
        config.eos_token_id = eos
        if config.pad_token_id is None:
            config.pad_token_id = eos[0]
        config.max_new_tokens = s.chat_max_new_tokens
        config.return_dict_in_generate = True  # the sequences and the KV cache, kept for the next turn
        return config

    # -- preparing a request (pipeline/request.py holds the rules; these are the model's encodings) ----

    @property
    def max_input_tokens(self) -> int:
        """Longest text accepted for one role, in tokens."""
        return self.settings.max_input_tokens

    @property
    def max_input_chars(self) -> int:
        """About how many characters of Chinese text fit max_input_tokens (the page's counter)."""
        return chars_for_tokens(self.settings.max_input_tokens)

    def prepare(self, text: Any, history: Any = None, mode: Any = None, what: str = "text",
                tags: bool = True, system: str | None = None) -> Request:
        """The request checked, routed and tokenized for its roles, or UserInputError (see request.prepare)."""
        return prepare(self, text, history, mode, what, tags, system)

    def review_ids(self, text: str) -> list[int]:
        """Token ids of text as the sentiment role reads it: what talks to the labeller dropped."""
        return chat_format.encode_text(self.tokenizer, self.sentiment.quote(text))

    def message_ids(self, text: str) -> list[int]:
        """Token ids of text as one chat message's content."""
        return chat_format.encode_text(self.tokenizer, text)

    def prompt_ids(self, history: list[dict[str, str]], message: str,
                   message_ids: list[int], system: str | None = None) -> tuple[list[int], int]:
        """(prompt ids, number of history messages dropped) for history + message within the budget.

        system replaces the chat system prompt (CHAT_SYSTEM_PROMPT) for this prompt.
        """
        system_ids = self._chat_system_ids
        if system is None:
            system = self.settings.chat_system_prompt
        else:
            system_ids = chat_format.encode_messages(
                self.tokenizer, [{"role": "system", "content": system}], add_generation_prompt=False)
        budget = min(self.settings.history_token_budget,
                     self.context_window - self.settings.chat_max_new_tokens - len(system_ids) - 8)
        if len(message_ids) + self._message_overhead > budget:
            limit = max(0, budget - self._message_overhead)
            raise refusal("too_long_for_context", tokens=len(message_ids), limit=limit, chars=len(message),
                          limit_chars=limit_in_chars(len(message), len(message_ids), limit))
        encoded = self._newest_history_ids(history, budget)
        lens = [budget + 1 if ids is None else len(ids) + self._message_overhead for ids in encoded]
        keep_from = trim_history(lens, len(message_ids) + self._message_overhead, budget)
        while keep_from < len(history) and history[keep_from]["role"] != "user":
            keep_from += 1  # a conversation starts with the user
        messages = [{"role": "system", "content": system},
                    *history[keep_from:], {"role": "user", "content": message}]
        contents = [None, *encoded[keep_from:], message_ids]
        ids = chat_format.encode_messages(self.tokenizer, messages, add_generation_prompt=True, contents=contents)
        return ids, keep_from

    def _newest_history_ids(self, history: Sequence[dict], budget: int) -> list[list[int] | None]:
        """Each message's ids, newest first until the budget is spent; None for the older ones (dropped)."""
        encoded: list[list[int] | None] = [None] * len(history)
        spent = 0
        for i in range(len(history) - 1, -1, -1):
            content = history[i]["content"]
            if len(content) > budget * MAX_CHARS_PER_TOKEN:
                break
            encoded[i] = self.message_ids(content)
            spent += len(encoded[i]) + self._message_overhead
            if spent > budget:
                break
        return encoded

    # -- the two roles ------------------------------------------------------------------------

    def classify(self, request: Request | str) -> Sentiment:
        """The sentiment of a prepared request (or of a text, prepared here): one of LABELS with its confidence."""
        if not isinstance(request, Request):
            request = self.prepare(request, mode=Mode.EMOTION, tags=False)
        if request.review_ids is None:
            raise ValueError("the request was prepared without the sentiment role")
        with self._lock.hold(short=True):
            started = time.perf_counter()
            log_odds = self.sentiment.question_log_odds(request.review_ids)
            latency_ms = (time.perf_counter() - started) * 1000
        return self.sentiment.parse(log_odds, latency_ms)

    def classify_batch(self, reviews_ids: Sequence[Sequence[int]]) -> list[Sentiment]:
        """The sentiments of several reviews (token ids from review_ids) read together in one forward."""
        if not reviews_ids:
            return []
        with self._lock.hold():
            started = time.perf_counter()
            log_odds = self.sentiment.batch_log_odds(reviews_ids)
            latency_ms = (time.perf_counter() - started) * 1000
        return [self.sentiment.parse(row, latency_ms / len(reviews_ids)) for row in log_odds]

    def classify_many(self, texts: Sequence[object], batch_size: int | None = None) -> list[Sentiment | UserInputError]:
        """The sentiment of every text, read in slices (pipeline.batch); a refused text gets its UserInputError."""
        return last(batch.classify_many(self, texts, batch_size)).results

    def chat(self, request: Request, max_new_tokens: int | None = None) -> ChatStream:
        """Start the reply to a prepared request; returns a stream of text pieces."""
        if request.prompt_ids is None:
            raise ValueError("the request was prepared without the chat role")
        prompt_ids = request.prompt_ids
        if request.history_dropped:
            log.info("chat: dropped %d oldest history messages to fit the budget", request.history_dropped)
        config = self.generation_config
        sampling = request.sampling
        if max_new_tokens is None and sampling is not None:
            max_new_tokens = sampling.max_new_tokens
        if max_new_tokens is not None or sampling is not None:
            config = copy.deepcopy(config)
        if max_new_tokens is not None:
            config.max_new_tokens = max(1, min(int(max_new_tokens), self.settings.chat_max_new_tokens))
        if sampling is not None:
            _apply_sampling(config, sampling)
        input_ids = torch.tensor([prompt_ids])

        def run(streamer, stops, cancelled):
            with self._lock.hold():
                if cancelled.is_set():  # cancelled while waiting for the model: skip the prefill too
                    streamer.end()
                    return input_ids
                if sampling is not None and sampling.seed is not None:
                    # Seeded under the model lock: no other generation draws from torch's RNG meanwhile.
                    torch.manual_seed(sampling.seed)
                # After each token, labels waiting for the model run before the next one (first, so a
                # Stop that came meanwhile is seen at this token).
                between = BetweenTokens(self._lock.let_short_calls_in)
                taken = Taken(None, 0)
                if self.conversations is not None:
                    taken = self.conversations.take(prompt_ids)
                    # The reply's cache holds at most the prompt, the reply and the spare room it grows by.
                    most_tokens = len(prompt_ids) + config.max_new_tokens + GROWTH_TOKENS
                    self.conversations.make_room(self.kv_bytes_per_token * most_tokens)
                if taken.reused:
                    log.debug("chat: %d of %d prompt tokens already read", taken.reused, len(prompt_ids))
                with torch.inference_mode():
                    out = self.model.generate(
                        input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                        past_key_values=taken.cache if taken.cache is not None else GrowingCache(),
                        generation_config=config, streamer=streamer,
                        stopping_criteria=[between, *stops])
                if self.conversations is not None and out.past_key_values is not None:
                    held = out.past_key_values.get_seq_length()  # the last token was never read back
                    self.conversations.put(out.sequences[0, :held].tolist(), out.past_key_values,
                                           prompt_len=len(prompt_ids), replaces=taken.source)
                sequences = out.sequences
                del out, taken  # the reply's cache, unless the store kept it: freed here, then given back
                release_freed_memory()
                return sequences

        self._generation_started()
        return ChatStream(run, self.tokenizer, len(prompt_ids), self.eos_ids, self._generation_done,
                          loop_tokens=self.settings.chat_stop_loop_tokens)


def _apply_sampling(config, sampling) -> None:
    """A request's own temperature and top_p on its copy of the generation config (temperature 0: greedy)."""
    if sampling.temperature is not None:
        if sampling.temperature == 0:
            config.do_sample = False
            # Unused when greedy; cleared so transformers does not warn about sampling-only options.
            config.temperature, config.top_p, config.top_k = None, None, None
        else:
            config.do_sample, config.temperature = True, sampling.temperature
    if sampling.top_p is not None and config.do_sample:
        config.top_p = sampling.top_p


def load_engine(model_dir: str | Path | None = None, *, settings: Settings | None = None, **overrides: Any) -> Engine:
    """Load the model once and return the engine; settings given, else from env vars and these overrides."""
    packing.configure_onednn()  # before the first oneDNN kernel: it reads its cache sizes once
    settings = settings or Settings.from_env(model_dir=model_dir, **overrides)
    model, tokenizer = load_model(settings)
    return Engine(model, tokenizer, settings)
