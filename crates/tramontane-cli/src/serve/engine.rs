//! The model on its own thread. A model and its GPU device live on the thread
//! that loaded them; requests reach it through a bounded FIFO queue (one
//! generates at a time, the rest wait in arrival order) and stream their
//! tokens back through a channel. A request whose client went away is skipped
//! if still queued, or stopped at its next token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tramontane::openai::{Logprob, ModelFacts, Prompt};
use tramontane::{Error, GenerateRequest, Generation, Model};

pub enum Event {
    /// The prompt rendered and tokenized: generation begins.
    Started,
    Token { piece: String, logprob: Option<Logprob> },
    Done(Result<Generation, Error>),
}

pub enum Work {
    Generate {
        prompt: Box<Prompt>,
        req: GenerateRequest,
        /// The chat's images, decoded, for the image tokens its template writes.
        pictures: Vec<tramontane::vision::Picture>,
        cancel: Arc<AtomicBool>,
        events: mpsc::UnboundedSender<Event>,
    },
    Tokenize { text: String, add_special: bool, reply: oneshot::Sender<Result<Vec<u32>, Error>> },
    Detokenize { ids: Vec<u32>, reply: oneshot::Sender<Result<String, Error>> },
}

/// The sending end of the queue.
#[derive(Clone)]
pub struct Engine {
    queue: SyncSender<Work>,
    /// Set on shutdown: the running generation stops at its next token.
    pub stopping: Arc<AtomicBool>,
}

pub enum Refused {
    /// The queue is full.
    Busy,
    /// The model's thread is gone (it panicked, or the device was lost for good).
    Gone,
}

impl Engine {
    /// Start the model's thread: `load` runs there, then requests. Returns once
    /// the model is loaded (or failed to).
    pub fn start(
        queue: usize,
        load: impl FnOnce() -> tramontane::Result<Model> + Send + 'static,
    ) -> tramontane::Result<(Engine, ModelFacts)> {
        let (tx, rx) = sync_channel::<Work>(queue);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        std::thread::Builder::new()
            .name("model".into())
            .spawn(move || {
                let model = match load() {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let facts = ModelFacts {
                    defaults: model.text.defaults.clone(),
                    tool_format: model.text.effective_tool_format(),
                    context: model.info.context,
                    images: model.config().vision.is_some(),
                };
                let _ = ready_tx.send(Ok(facts));
                serve_queue(model, rx, &stop);
            })
            .map_err(|e| Error::Internal(format!("starting the model thread: {e}")))?;
        let facts = ready_rx.recv().map_err(|_| Error::Internal("the model thread ended while loading".into()))??;
        Ok((Engine { queue: tx, stopping }, facts))
    }

    pub fn submit(&self, work: Work) -> Result<(), Refused> {
        self.queue.try_send(work).map_err(|e| match e {
            TrySendError::Full(_) => Refused::Busy,
            TrySendError::Disconnected(_) => Refused::Gone,
        })
    }
}

fn serve_queue(mut model: Model, rx: Receiver<Work>, stopping: &AtomicBool) {
    // Token texts for log-probabilities, from a copy of the tokenizer (the
    // model is borrowed while it generates).
    let tok = model.tokenizer().inner().clone();
    let text_of = |id: u32| tok.decode(&[id], false).unwrap_or_default();
    while let Ok(work) = rx.recv() {
        match work {
            Work::Tokenize { text, add_special, reply } => {
                let _ = reply.send(model.tokenizer().encode_with(&text, add_special, true));
            }
            Work::Detokenize { ids, reply } => {
                let vocab = model.config().vocab;
                let r = match ids.iter().find(|&&i| i as usize >= vocab) {
                    Some(bad) => Err(Error::InvalidRequest(format!("token id {bad} is outside the vocabulary of {vocab}"))),
                    None => model.tokenizer().decode(&ids, true),
                };
                let _ = reply.send(r);
            }
            Work::Generate { prompt, mut req, pictures, cancel, events } => {
                // The client left while this waited: nothing to do.
                if cancel.load(Ordering::SeqCst) || events.is_closed() {
                    continue;
                }
                let ids = match *prompt {
                    Prompt::Chat(r) => model.chat_ids(&r),
                    Prompt::Text(t) => model.text_prompt(&t),
                    Prompt::Ids(ids) => Ok(ids),
                };
                // A constraint that does not compile fails the request here,
                // before the answer starts (a 400, not a broken stream).
                let ids = ids.and_then(|ids| match &req.constraint {
                    Some(c) => model.compile_constraint(c).map(|_| ids),
                    None => Ok(ids),
                });
                // Each image token the template wrote becomes its image's grid.
                let ids = ids.and_then(|ids| {
                    if pictures.is_empty() {
                        return Ok(ids);
                    }
                    let (ids, images) = model.prompt_images(&ids, &pictures)?;
                    req.images = images;
                    Ok(ids)
                });
                let ids = match ids {
                    Ok(ids) => ids,
                    Err(e) => {
                        let _ = events.send(Event::Done(Err(e)));
                        continue;
                    }
                };
                let _ = events.send(Event::Started);
                let r = pollster::block_on(model.generate(&ids, &req, &mut |piece, _id, lp| {
                    if cancel.load(Ordering::SeqCst) || stopping.load(Ordering::SeqCst) {
                        return false;
                    }
                    let logprob = lp.map(|l| Logprob::of(l, text_of));
                    events.send(Event::Token { piece: piece.to_string(), logprob }).is_ok()
                }));
                match &r {
                    Ok(g) => eprintln!(
                        "generated {} tokens after a prompt of {} ({} prefilled), finish {}",
                        g.generated.len(),
                        g.prompt_tokens,
                        g.prefilled_tokens,
                        g.finish.as_str()
                    ),
                    Err(Error::Aborted) if stopping.load(Ordering::SeqCst) => eprintln!("generation stopped: the server is shutting down"),
                    Err(Error::Aborted) => eprintln!("generation stopped: the client disconnected"),
                    Err(e) => eprintln!("generation failed: {e}"),
                }
                let _ = events.send(Event::Done(r));
            }
        }
    }
}
