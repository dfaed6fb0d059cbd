"""The demo's vision tab: chat about an uploaded image with a VisualRWKV model.

The conversation is `rwkv_mm.vision.chat`'s `ImageChat` (what `rwkv-mm chat` runs): the image
and the first question are prefilled once, every answer token is one recurrent step, and a later
question continues from the state, so the image is never read again. `chat_turn` is the tab's
logic as a plain generator (tests call it without a browser); `build_tab` lays out the gradio
components around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rwkv_mm.errors import UserError

from .models import check_upload

#: Messages as gradio's Chatbot shows them: {"role": "user" | "assistant", "content": str}.
History = list[dict[str, str]]


@dataclass(frozen=True)
class ChatSettings:
    """The tab's sampling controls (`rwkv-mm chat`'s flags; top_p 0 is greedy, its default)."""

    temperature: float = 1.0
    top_p: float = 0.0
    top_k: int = 0
    max_tokens: int = 128
    seed: int | None = None

    def sampling(self):
        """The backbone's SamplingConfig of these settings (a UserError naming a bad value)."""
        from rwkv_mm.backbone import SamplingConfig

        return SamplingConfig(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)


@dataclass
class ChatSession:
    """One browser session's conversation and the settings its sampler was made with."""

    chat: object  # rwkv_mm.vision.chat.ImageChat
    settings: ChatSettings

    def apply(self, settings: ChatSettings) -> None:
        """Use `settings` from the next answer on; the recurrent state is kept. The sampler (its
        seeded generator, its penalties) is rebuilt only when they changed, so unchanged settings
        sample on as `rwkv-mm chat` does."""
        if settings != self.settings:
            self.chat.set_sampling(settings.sampling(), settings.seed)
            self.chat.max_tokens = settings.max_tokens
            self.settings = settings


def read_image(path: str | Path | None, max_bytes: int):
    """An uploaded image decoded as training decodes images (`open_image`: every mode to 8-bit
    RGB as it is meant to look; a bad file a UserError naming it): a PIL image."""
    from rwkv_mm.vision.image_io import open_image

    return open_image(check_upload(path, "image", max_bytes))


def start_chat(model, picture, settings: ChatSettings) -> ChatSession:
    """A new conversation about `picture` (a decoded PIL image)."""
    return ChatSession(model.chat(picture, settings.sampling(), settings.max_tokens, settings.seed), settings)


def enlarged(picture, side: int = 200):
    """A small picture scaled up by a whole factor (nearest pixels) to about `side` pixels, for
    the preview; the model reads the original."""
    factor = side // max(picture.size)
    if factor < 2:
        return picture
    return picture.resize((picture.width * factor, picture.height * factor), resample=0)  # 0: NEAREST


def stats_line(session: ChatSession) -> str:
    """What the last turn cost, in one line of Markdown."""
    s = session.chat.last_turn
    read = ("image and question" if s.with_image
            else "question only: the image is in the recurrent state, not read again")
    return (f"turn {session.chat.turns}: {s.prefill_tokens} tokens prefilled in {s.prefill_s:.2f} s "
            f"({read}) · {s.tokens} tokens decoded at **{s.tokens_per_s:.1f} tokens/s**")


def chat_turn(model, session: ChatSession | None, image, question: str, history: History,
              settings: ChatSettings, max_bytes: int) -> Iterator[tuple[ChatSession, History, str]]:
    """Answer `question`, streaming: yields (session, history with the answer so far, stats)
    after every text piece. Without a session (a new chat) the conversation starts about
    `image`: a decoded PIL image, or an uploaded file's path (decoded by `read_image`)."""
    from PIL import Image

    question = (question or "").strip()
    if not question:
        raise UserError("the question is empty", fix="type a question about the image")
    if session is None:
        picture = image if isinstance(image, Image.Image) else read_image(image, max_bytes)
        session = start_chat(model, picture, settings)
    session.apply(settings)
    history = [*history, {"role": "user", "content": question}, {"role": "assistant", "content": ""}]
    yield session, history, "…"
    for piece in session.chat.reply(question):
        history[-1] = {"role": "assistant", "content": history[-1]["content"] + piece}
        yield session, history, stats_line(session)
    yield session, history, stats_line(session)


def load(path: str | Path):
    """The tab's model: a VisualRWKV folder or released .pth, loaded as `rwkv-mm chat` loads it."""
    from rwkv_mm.vision.chat import ChatModel

    return ChatModel.load(path)


def build_tab(model, context) -> None:
    """The tab's components and events (inside a `gr.Tab` of the app's Blocks; `context` is the
    app's DemoContext)."""
    import gradio as gr

    from .ui import shown_in_page

    gr.Markdown("Upload an image and ask about it. The image is read once, with your first question; "
                "every later turn continues from the model's recurrent state at a constant cost per token.")
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="Image file", file_types=["image"], type="filepath", elem_id="vision-image",
                             height=110)
            preview = gr.Image(label="The image as the model reads it", interactive=False, type="pil",
                               elem_id="vision-preview", height=220)
            with gr.Accordion("Sampling", open=False):
                temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="temperature (0 = greedy)")
                top_p = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="top-p (0 = greedy)")
                top_k = gr.Slider(0, 100, value=0, step=1, label="top-k (0 = off)")
                max_tokens = gr.Slider(1, 512, value=128, step=1, label="max tokens per answer")
                seed = gr.Number(value=None, precision=0, label="seed (empty = random)")
        with gr.Column(scale=2):
            chatbot = gr.Chatbot(label="Chat", elem_id="vision-chat", height=420)
            question = gr.Textbox(label="Question", placeholder="What colour is the shape?",
                                  elem_id="vision-question", lines=1)
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="vision-send")
                new = gr.Button("New chat", elem_id="vision-new")
            stats = gr.Markdown(elem_id="vision-stats")
    session, picture = gr.State(None), gr.State(None)

    @shown_in_page
    def read(path):
        image = None if path is None else read_image(path, context.max_bytes)
        return image, None if image is None else enlarged(image)

    @shown_in_page
    def respond(session, picture, question, history, temperature, top_p, top_k, max_tokens, seed):
        if session is None and picture is None:
            raise UserError("no image to talk about", fix="upload an image first")
        settings = ChatSettings(float(temperature), float(top_p), int(top_k), int(max_tokens),
                                None if seed is None else int(seed))
        for session, history, line in chat_turn(model, session, picture, question, history or [], settings,
                                                context.max_bytes):
            yield session, history, "", line

    def restart():
        return None, [], ""

    inputs = [session, picture, question, chatbot, temperature, top_p, top_k, max_tokens, seed]
    for event in (send.click, question.submit):
        event(respond, inputs, [session, chatbot, question, stats])
    new.click(restart, None, [session, chatbot, stats])
    # a new upload is a new conversation; a file that does not decode leaves no picture behind
    forget = [picture, preview, session, chatbot, stats]
    upload.clear(lambda: (None, None, None, [], ""), None, forget)
    upload.upload(lambda: (None, None, None, [], ""), None, forget).then(read, [upload], [picture, preview])
