//! The serving scheduler on the real SmolLM2 through the batched pipeline: greedy requests give
//! the same text alone and four at once; stop strings end a reply and are not sent; a request
//! whose client is gone is cancelled.

use std::sync::{Arc, Mutex};

use prima::gguf::GgufFile;
use prima::model::Model;
use prima::sampler::SamplerConfig;
use prima::serve::PipelineEngine;
use prima::serve::request::Penalties;
use prima::serve::response::Finish;
use prima::serve::scheduler::{self, Event, Job, Stats};
use prima::tokenizer::Tokenizer;
use smol::channel::{Receiver, Sender};

struct Running {
    jobs: Sender<Job>,
    stats: Arc<Mutex<Stats>>,
    tok: Arc<Tokenizer>,
}

fn start() -> Running {
    let path = crate::model::smollm2();
    let tok = Arc::new(Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap());
    let model = Model::from_gguf(GgufFile::open_weights(&path).unwrap()).unwrap();
    let engine = PipelineEngine::local(&model, 256, 2, 4, &prima::gpu::Offload::cpu()).unwrap();
    let (jobs, rx) = smol::channel::bounded(8);
    let stats = Arc::new(Mutex::new(Stats::default()));
    let (t, s) = (tok.clone(), stats.clone());
    std::thread::spawn(move || scheduler::run(Box::new(engine), t, rx, s, scheduler::Options { prefill_chunk: 4 }));
    Running { jobs, stats, tok }
}

fn submit(r: &Running, prompt: &str, max_tokens: usize, stop: &[&str]) -> Receiver<Event> {
    let (tx, rx) = smol::channel::unbounded();
    let sampling = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
    let job = Job {
        prompt: r.tok.encode(prompt, true, true),
        sampling,
        penalties: Penalties::default(),
        max_tokens,
        stop: stop.iter().map(|s| s.to_string()).collect(),
        events: tx,
    };
    r.jobs.send_blocking(job).unwrap();
    rx
}

fn text_of(rx: Receiver<Event>) -> (String, Finish) {
    let mut text = String::new();
    loop {
        match rx.recv_blocking().expect("the scheduler answers") {
            Event::Text(t) => text += &t,
            Event::Done { finish, .. } => return (text, finish),
            Event::Failed(e) => panic!("{e}"),
            Event::Prompt { .. } => {}
        }
    }
}

#[test]
fn serve_batched_greedy_equals_alone_and_stops_and_cancels() {
    let r = start();
    let prompts =
        ["The capital of France is", "1, 2, 3, 4,", "Once upon a time, a long prompt that is fed in chunks", "Hi"];
    let alone: Vec<_> = prompts.iter().map(|p| text_of(submit(&r, p, 12, &[]))).collect();
    let rxs: Vec<_> = prompts.iter().map(|p| submit(&r, p, 12, &[])).collect();
    let together: Vec<_> = rxs.into_iter().map(text_of).collect();
    assert_eq!(alone, together);

    let (full, _) = &alone[1];
    let stop = &full[full.len() / 2..full.len() / 2 + 2];
    let (cut, finish) = text_of(submit(&r, prompts[1], 12, &[stop]));
    assert_eq!((cut.as_str(), finish), (&full[..full.find(stop).unwrap()], Finish::Stop));

    let rx = submit(&r, "Write a long story.", 200, &[]);
    while !matches!(rx.recv_blocking().unwrap(), Event::Text(_)) {}
    drop(rx);
    let t0 = std::time::Instant::now();
    loop {
        let s = r.stats.lock().unwrap().clone();
        if s.cancelled == 1 && s.active == 0 {
            break;
        }
        assert!(t0.elapsed().as_secs() < 20, "not cancelled: {s:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
