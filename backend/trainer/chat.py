"""Chat rendering + tokenisation with an assistant-token loss mask (honours assistant `weight: 0`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from backend.trainer.tokenizer import IM_END, IM_START


@dataclass(frozen=True)
class EncodedChat:
    """Token ids plus a 0/1 mask of which tokens are trained on (assistant content + end-of-turn)."""

    input_ids: list[int]
    loss_mask: list[int]


def message_text(message: dict[str, Any]) -> str:
    """Message content as text; assistant tool calls are rendered as JSON so the model can learn them."""
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    if isinstance(content, list):  # content parts: keep the text ones
        text = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    tool_calls = message.get("tool_calls")
    if tool_calls:
        calls = [
            {"name": c.get("function", {}).get("name"), "arguments": c.get("function", {}).get("arguments")}
            for c in tool_calls
            if isinstance(c, dict)
        ]
        rendered = json.dumps({"tool_calls": calls}, ensure_ascii=False, separators=(",", ":"))
        text = f"{text}\n{rendered}" if text else rendered
    return text


class ChatFormat:
    """Renders chats for one tokenizer: segment-wise ChatML when it has the ChatML specials, else its own
    chat template (assistant spans located by rendering prefixes), else plain ChatML text + eos."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> None:
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        vocab = tokenizer.get_vocab()
        self._chatml_native = IM_START in vocab and IM_END in vocab
        self._use_hf_template = not self._chatml_native and bool(getattr(tokenizer, "chat_template", None))
        if self._chatml_native:
            self.end_token_id = int(vocab[IM_END])
        else:
            eos = tokenizer.eos_token_id
            if eos is None:
                raise ValueError("tokenizer has neither ChatML tokens nor an eos token")
            self.end_token_id = int(eos)

    # --- public -------------------------------------------------------------------------------------------
    def encode_chat(self, messages: list[dict[str, Any]]) -> EncodedChat:
        """Encode a full training conversation, truncated to max_seq_len."""
        if self._use_hf_template:
            enc = self._encode_hf_template(messages)
        else:
            ids: list[int] = []
            mask: list[int] = []
            for m in messages:
                head, body = self._segments(m)
                trained = m.get("role") == "assistant" and m.get("weight", 1) != 0
                head_ids = self._encode(head)
                body_ids = self._encode(body) + [self.end_token_id] + self._encode("\n")
                ids += head_ids + body_ids
                # The trailing newline after end-of-turn is never generated, so it is not trained on.
                mask += [0] * len(head_ids) + [int(trained)] * (len(body_ids) - 1) + [0]
            enc = EncodedChat(ids, mask)
        return EncodedChat(enc.input_ids[: self.max_seq_len], enc.loss_mask[: self.max_seq_len])

    def encode_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        """Encode a conversation followed by the assistant generation prompt (keeps the most recent tokens)."""
        if self._use_hf_template:
            text = self._render(messages, add_generation_prompt=True)
            ids = self._encode(text)
        else:
            ids = []
            for m in messages:
                head, body = self._segments(m)
                ids += self._encode(head) + self._encode(body) + [self.end_token_id] + self._encode("\n")
            ids += self._encode(self._header("assistant"))
        return ids[-self.max_seq_len :]

    def encode_completion(self, message: dict[str, Any]) -> list[int]:
        """Encode one assistant reply as it follows `encode_prompt` (body + end-of-turn)."""
        return self._encode(message_text(message)) + [self.end_token_id]

    # --- internals ----------------------------------------------------------------------------------------
    def _header(self, role: str) -> str:
        return f"{IM_START}{role}\n"

    def _segments(self, m: dict[str, Any]) -> tuple[str, str]:
        role = str(m.get("role", "user"))
        if role == "developer":
            role = "system"
        body = message_text(m)
        if role == "tool" and m.get("tool_call_id"):
            body = f"[tool_call_id={m['tool_call_id']}] {body}"
        return self._header(role), body

    def _encode(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool) -> str:
        plain = [{"role": m.get("role", "user"), "content": message_text(m)} for m in messages]
        out = self.tokenizer.apply_chat_template(
            plain, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(out)

    def _encode_hf_template(self, messages: list[dict[str, Any]]) -> EncodedChat:
        full = self._render(messages, add_generation_prompt=False)
        spans: list[tuple[int, int]] = []
        for i, m in enumerate(messages):
            if m.get("role") != "assistant" or m.get("weight", 1) == 0:
                continue
            before = self._render(messages[:i], add_generation_prompt=True) if i else ""
            through = self._render(messages[: i + 1], add_generation_prompt=False)
            if full.startswith(through) and through.startswith(before):
                spans.append((len(before), len(through)))
        enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        mask = [
            int(any(s <= start < e for s, e in spans) and end > start) for start, end in enc["offset_mapping"]
        ]
        return EncodedChat(ids, mask)
