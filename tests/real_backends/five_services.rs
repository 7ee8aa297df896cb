//! Five services, one manager, 120 callers: zero errors and 99 % reuse, counted on the server side.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::PoolManager;
use serde_json::json;

use crate::common::*;
use crate::support::*;

/// What a load caller does in a loop.
#[derive(Clone, Copy, Debug)]
enum Work {
    Chat,
    Models,
    GradioInfo,
    GradioConfig,
    RvcConvert,
    RvcModels,
    ComfyHttp,
    ComfyJob,
}

fn work_for(caller: usize) -> Work {
    let (service, nth) = (caller % 5, caller / 5);
    match service {
        0 if nth == 0 => Work::Chat,
        0 => Work::Models,
        1 => Work::GradioInfo,
        2 => Work::GradioConfig,
        3 if nth % 2 == 0 => Work::RvcConvert,
        3 => Work::RvcModels,
        _ if nth < 5 => Work::ComfyJob,
        _ => Work::ComfyHttp,
    }
}

fn do_work(m: &PoolManager, work: Work, i: usize, audio_b64: &str) -> Result<(), String> {
    let http = |s: &str| m.http(s).expect("configured service");
    match work {
        Work::Chat => expect(
            http("litellm")
                .post("/v1/chat/completions")
                .send_json(&chat_body(false)),
            200,
            "hello from mock",
        ),
        Work::Models => expect(http("litellm").get("/v1/models").call(), 200, "mock-gpt"),
        Work::GradioInfo => expect(
            http("wan2gp").get("/gradio_api/info").call(),
            200,
            "/generate",
        ),
        Work::GradioConfig => expect(http("upscaler").get("/config").call(), 200, "5.29.0"),
        Work::RvcConvert => expect(
            http("rvc")
                .post("/convert")
                .send_json(&json!({ "audio_data": audio_b64 })),
            200,
            "RIFF",
        ),
        Work::RvcModels => expect(http("rvc").get("/models").call(), 200, "mock-voice"),
        Work::ComfyHttp => match i % 3 {
            0 => expect(
                http("comfyui").get("/prompt").call(),
                200,
                "queue_remaining",
            ),
            1 => expect(http("comfyui").get("/queue").call(), 200, "queue_running"),
            _ => expect(http("comfyui").get("/system_stats").call(), 200, "devices"),
        },
        Work::ComfyJob => {
            let run = comfy_job(m, 2, 0.01)?;
            if run.progress == [1, 2] {
                Ok(())
            } else {
                Err(format!("progress {:?}", run.progress))
            }
        }
    }
}

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn five_services_one_manager_120_callers_zero_errors_and_99_percent_reuse_server_side() {
    const CALLERS: usize = 120;
    const STEADY: Duration = Duration::from_secs(8);
    const STEADY_REQUESTS: usize = 150;
    let five = Five::get();
    // LiteLLM's first chat completion loads its model machinery (over a second on an idle
    // machine, far more under load): done once, through a manager of its own and before the
    // measured window, so a cold server does not hold every connection while 20 callers wait
    // and its connections are not counted below.
    {
        let warm = manager(200, vec![litellm_service("litellm", &five.litellm, 1)]);
        do_work(&warm, Work::Chat, 0, "").expect("LiteLLM warm-up");
        warm.shutdown(Duration::from_secs(5)).unwrap();
    }
    let start_marks: Vec<_> = five.all().iter().map(|(_, b)| b.mark()).collect();
    let m = Arc::new(manager(
        200,
        vec![
            litellm_service("litellm", &five.litellm, 4),
            gradio_service("wan2gp", &five.wan2gp, 4),
            gradio_service("upscaler", &five.upscaler, 4),
            rvc_service(&five.rvc, 4),
            comfy_service(&five.comfyui, 4, 5, 1),
        ],
    ));
    let audio = Arc::new(base64(&wav(2_000)));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (m, stop, audio) = (Arc::clone(&m), Arc::clone(&stop), Arc::clone(&audio));
            thread::spawn(move || {
                let work = work_for(c);
                let (mut ok, mut errors) = (0usize, Vec::new());
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    match do_work(&m, work, i, &audio) {
                        Ok(()) => ok += 1,
                        Err(e) => errors.push(format!("caller {c} {work:?}: {e}")),
                    }
                    i += 1;
                }
                (work, ok, errors)
            })
        })
        .collect();
    // Warm-up: until every server has logged a request on each of the pool's connections
    // (then a port first seen later is a new connection). Steady: at least 8 s and until
    // each server answered enough requests (LiteLLM is slow when the machine is busy).
    let warmed = eventually(Duration::from_secs(30), || {
        five.all().iter().enumerate().all(|(i, (name, _))| {
            ports(&http_only(&start_marks[i].entries())).len()
                >= http_stats(&m, name).max.min(CALLERS / 5)
        })
    });
    let warmup = start.elapsed();
    let steady_marks: Vec<_> = five.all().iter().map(|(_, b)| b.mark()).collect();
    thread::sleep(STEADY);
    eventually(Duration::from_secs(30), || {
        steady_marks
            .iter()
            .all(|mark| http_only(&mark.entries()).len() >= STEADY_REQUESTS)
    });
    let end_marks: Vec<_> = five.all().iter().map(|(_, b)| b.mark()).collect();
    let steady_took = start.elapsed() - warmup;
    stop.store(true, Ordering::Relaxed);
    let mut by_work: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    for c in callers {
        let (work, ok, errs) = c.join().expect("caller panicked");
        *by_work.entry(format!("{work:?}")).or_default() += ok;
        errors.extend(errs);
    }
    let stats = m.stats();
    println!(
        "warm-up {warmup:.1?} (all connections seen by the servers: {warmed}), steady \
         {steady_took:.1?}; calls by kind: {by_work:?}"
    );
    assert!(
        errors.is_empty(),
        "{} errors, first ones: {:#?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert_eq!(stats.totals.errors, 0, "{}", stats.to_json());
    thread::sleep(Duration::from_millis(300)); // the last access-log lines

    let (mut all_requests, mut all_conns) = (0usize, 0usize);
    for (i, (name, _)) in five.all().iter().enumerate() {
        let warm = http_only(&start_marks[i].entries_until(&steady_marks[i]));
        let steady = http_only(&steady_marks[i].entries_until(&end_marks[i]));
        let whole = http_only(&start_marks[i].entries());
        let warm_ports = ports(&warm);
        let new_in_steady = ports(&steady).difference(&warm_ports).count();
        let steady_reuse = 1.0 - new_in_steady as f64 / steady.len().max(1) as f64;
        let whole_reuse = 1.0 - ports(&whole).len() as f64 / whole.len().max(1) as f64;
        let pool = stats.service(name).unwrap().http.clone().unwrap();
        println!(
            "{name:9} server side: steady {:5} requests, {new_in_steady} new connections, \
             reuse {:.2} %; whole run {:5} requests over {:2} connections, reuse {:.2} %; \
             pool: {} requests, {} connections created, reuse {:.2} %",
            steady.len(),
            steady_reuse * 100.0,
            whole.len(),
            ports(&whole).len(),
            whole_reuse * 100.0,
            pool.requests.unwrap_or(0),
            pool.connections_created,
            pool.reuse_rate() * 100.0
        );
        assert!(
            steady.len() >= STEADY_REQUESTS,
            "{name}: only {} requests in steady load",
            steady.len()
        );
        assert!(
            steady_reuse >= 0.99,
            "{name}: steady reuse {:.2} % < 99 %",
            steady_reuse * 100.0
        );
        // The server saw exactly the connections the pool says it opened.
        assert_eq!(
            ports(&whole).len() as u64,
            pool.connections_created,
            "{name}: server-side connections vs the pool's count"
        );
        assert!(
            ports(&whole).len() <= pool.max,
            "{name}: more connections than the cap"
        );
        all_requests += whole.len();
        all_conns += ports(&whole).len();
    }
    let total_reuse = 1.0 - all_conns as f64 / all_requests as f64;
    println!(
        "all services: {all_requests} requests over {all_conns} connections: reuse {:.2} %",
        total_reuse * 100.0
    );
    assert!(
        total_reuse >= 0.99,
        "whole-run reuse {:.2} %",
        total_reuse * 100.0
    );
    let ws = ws_stats(&m, "comfyui");
    println!(
        "comfyui WebSocket: {} checkouts over {} sockets",
        ws.acquisitions, ws.connections_created
    );
    assert!(ws.acquisitions >= 50, "{ws:?}");
    assert!(ws.connections_created <= 5, "{ws:?}");
    let report = m.shutdown(Duration::from_secs(5)).unwrap();
    assert!(report.still_in_use.is_empty(), "{report:?}");
}
