//! DTMF talk-off: the detector must report no digit over several minutes of synthetic speech
//! (espeak-ng, five languages, male and female variants) and a minute or more of music-like
//! signals (sox: plucked chords, sweeps, tremolo, and simultaneous tones close to the DTMF
//! frequencies that do not form a valid row/column pair).
//!
//! Needs the Debian packages `espeak-ng` and `sox`; the test fails, naming them, when they are
//! missing. Audio is produced as 8 kHz signed 16-bit raw with
//! `sox IN -r 8000 -c 1 -b 16 -e signed-integer OUT.raw`, in parallel threads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use codecs::dtmf::{DtmfDetector, DtmfEvent};

const ENGLISH: &str = "Thank you for calling the customer service line of the northern water \
company. Your call may be recorded for training and quality purposes. If you are calling about a \
bill, please have your account number ready; it is printed in the top right corner of every \
statement, just below the date. Our offices are open from eight thirty in the morning until six \
in the evening, Monday to Friday, and from nine until one on Saturdays. Did you know that you \
can read your meter yourself and send us the figures online? It takes about two minutes, and \
you will never receive an estimated bill again. For questions about a leak, a burst pipe or \
low pressure, stay on the line: an engineer is available around the clock, seven days a week, \
including public holidays. We are currently experiencing a high volume of calls. The expected \
waiting time is approximately fourteen minutes. Alternatively, you may request a call back, and \
one of our advisers will phone you within the next business day. Thank you for your patience.";

const ENGLISH_2: &str = "The quick brown fox jumps over the lazy dog while six zebras quietly \
judge the jazz band playing beside the river. Whistling softly, the old sailor checked the \
compass, counted forty seven knots, and shouted: hoist the main sail, we are heading north! \
Children laughed, bells rang at the church, and a sharp high pitched voice asked whether anybody \
had seen the missing keys. Three hundred and sixty five days, twelve months, fifty two weeks. \
Is it eleven o'clock already? Oh no, oh yes, maybe, absolutely, certainly not. Please press \
nothing at all, just listen carefully to the following important announcement about flights \
departing from gate nineteen to Amsterdam, Berlin, Chicago and Dublin.";

const GERMAN: &str = "Herzlich willkommen bei der Kundenbetreuung Ihrer Stadtwerke. Dieses \
Gespräch kann zu Schulungszwecken aufgezeichnet werden. Wenn Sie Fragen zu Ihrer Jahresabrechnung \
haben, halten Sie bitte Ihre Vertragsnummer bereit. Sie finden sie oben rechts auf jeder \
Rechnung, direkt unter dem Datum. Unsere Servicezeiten sind montags bis freitags von acht bis \
achtzehn Uhr sowie samstags von neun bis dreizehn Uhr. Wussten Sie schon, dass Sie Ihren \
Zählerstand auch bequem im Internet melden können? Das dauert nur wenige Minuten. Bei einer \
Störung, einem Wasserrohrbruch oder zu niedrigem Druck bleiben Sie bitte in der Leitung, unser \
Bereitschaftsdienst ist rund um die Uhr für Sie erreichbar, auch an Sonn- und Feiertagen. \
Zurzeit rufen sehr viele Kunden gleichzeitig an. Die voraussichtliche Wartezeit beträgt etwa \
zwölf Minuten. Vielen Dank für Ihre Geduld, der nächste freie Mitarbeiter ist gleich für Sie da.";

const FRENCH: &str = "Bonjour et bienvenue au service clientèle de votre fournisseur \
d'électricité. Cet appel peut être enregistré afin d'améliorer la qualité de nos services. Pour \
toute question concernant votre facture, munissez-vous de votre numéro de client, qui figure en \
haut à droite de chaque courrier. Nos conseillers vous répondent du lundi au vendredi de huit \
heures à dix-neuf heures, et le samedi matin de neuf heures à midi. Saviez-vous que vous pouvez \
transmettre votre relevé de compteur directement sur notre site internet ? Cela ne prend que \
quelques instants. En cas de panne, de coupure ou d'odeur de gaz, restez en ligne : un \
technicien est joignable jour et nuit, sept jours sur sept. En raison d'un grand nombre \
d'appels, le temps d'attente estimé est de quinze minutes environ. Merci de votre patience, un \
conseiller va prendre votre appel dans quelques instants.";

const SPANISH: &str = "Buenos días y gracias por llamar al servicio de atención al cliente de \
su compañía de telefonía. Esta llamada puede ser grabada con fines de calidad y formación. Si \
llama por una factura, tenga a mano su número de contrato, que aparece en la parte superior \
derecha de cada carta. Nuestro horario es de lunes a viernes, de ocho de la mañana a ocho de la \
tarde, y los sábados de nueve a dos. ¿Sabía usted que puede consultar su consumo y descargar sus \
facturas desde la aplicación móvil? Es rápido, sencillo y gratuito. Si tiene una avería o no \
tiene conexión, no cuelgue: un técnico le atenderá en breve, las veinticuatro horas del día. En \
este momento todos nuestros agentes están ocupados. El tiempo de espera aproximado es de diez \
minutos. Muchas gracias por su paciencia y disculpe las molestias.";

const ITALIAN: &str = "Buongiorno e benvenuti nel servizio clienti della vostra compagnia del \
gas. La telefonata potrebbe essere registrata per migliorare la qualità del servizio. Se chiamate \
per una bolletta, tenete a portata di mano il codice cliente, che trovate in alto a destra su \
ogni documento. Siamo a vostra disposizione dal lunedì al venerdì dalle otto alle venti e il \
sabato dalle nove alle tredici. Sapevate che potete comunicare la lettura del contatore anche dal \
nostro sito? Bastano pochi minuti. In caso di guasto, di fuga di gas o di interruzione della \
fornitura, restate in linea: un tecnico è disponibile giorno e notte, anche nei giorni festivi. \
Al momento tutti gli operatori sono occupati. Il tempo di attesa previsto è di circa undici \
minuti. Grazie per la pazienza, sarete messi in contatto con il primo operatore disponibile.";

/// (voice, words per minute, pitch 0-99, text).
const SPEECH: &[(&str, u32, u32, &str)] = &[
    ("en-us", 160, 50, ENGLISH),
    ("en-gb+f2", 160, 70, ENGLISH),
    ("en-us+m3", 175, 35, ENGLISH_2),
    ("en-gb-x-rp+f4", 150, 85, ENGLISH_2),
    ("de", 160, 50, GERMAN),
    ("de+f3", 160, 75, GERMAN),
    ("fr", 160, 45, FRENCH),
    ("fr+f2", 160, 80, FRENCH),
    ("es", 160, 50, SPANISH),
    ("es+f1", 170, 70, SPANISH),
    ("it", 160, 40, ITALIAN),
    ("it+f4", 160, 75, ITALIAN),
];

/// sox `synth` effect arguments (after the duration) for music-like signals, with how many
/// channels the synth uses (mixed down afterwards) and the rate it runs at.
const MUSIC: &[(&str, u32, u32, &str)] = &[
    (
        "plucked C major chords",
        3,
        48000,
        "pluck C4 pluck E4 pluck G4",
    ),
    (
        "plucked A minor chords",
        3,
        48000,
        "pluck A3 pluck C5 pluck E5",
    ),
    ("plucked high triad", 3, 48000, "pluck F5 pluck A5 pluck C6"),
    ("sine sweep 300-3400 Hz", 1, 8000, "sine 300-3400"),
    ("square sweep 200-2000 Hz", 1, 8000, "square 200-2000"),
    // Two tones swept together at a fixed ratio of 1.65, which lies about 5 % from every
    // column/row frequency ratio (1.57 and 1.73 are the nearest), so at no moment are both
    // tones within 2.5 % of a valid pair. Sweeps that cross each other are left out on purpose:
    // at a few hundred Hz per second they pass through a valid row/column pair slowly enough to
    // be a real, in-tolerance DTMF digit for 50 ms or more.
    (
        "parallel sweep 500-1100 Hz, ratio 1.65",
        2,
        8000,
        "sine 500/1100 sine 825/1815",
    ),
    ("tremolo 440 Hz", 1, 8000, "sine 440 tremolo 6 80"),
    ("row pair 697+770 Hz", 2, 8000, "sine 697 sine 770"),
    ("row pair 852+941 Hz", 2, 8000, "sine 852 sine 941"),
    ("column pair 1209+1336 Hz", 2, 8000, "sine 1209 sine 1336"),
    ("column pair 1477+1633 Hz", 2, 8000, "sine 1477 sine 1633"),
    (
        "pair 5 % above '5' (808+1403 Hz)",
        2,
        8000,
        "sine 808 sine 1403",
    ),
    (
        "pair 5 % below '9' (809+1403 Hz)",
        2,
        8000,
        "sine 809 sine 1403",
    ),
    (
        "between rows and columns (733+1272 Hz)",
        2,
        8000,
        "sine 733 sine 1272",
    ),
    (
        "triangle chord near DTMF (700+1050+1400 Hz)",
        3,
        8000,
        "triangle 700 triangle 1050 triangle 1400",
    ),
    (
        "sawtooth 350 Hz (harmonics on a DTMF grid)",
        1,
        8000,
        "sawtooth 350",
    ),
    ("pink noise", 1, 8000, "pinknoise"),
];

/// Seconds of each music signal.
const MUSIC_SECONDS: u32 = 5;

fn require(tool: &str, package: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{tool}` is needed for the DTMF talk-off test: apt-get install -y {package}"
    );
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_raw(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn speech(dir: &Path, i: usize) -> Vec<i16> {
    let (voice, wpm, pitch, text) = SPEECH[i];
    let wav = dir.join(format!("speech{i}.wav"));
    let raw = dir.join(format!("speech{i}.raw"));
    run(Command::new("espeak-ng")
        .args([
            "-v",
            voice,
            "-s",
            &wpm.to_string(),
            "-p",
            &pitch.to_string(),
            "-w",
        ])
        .arg(&wav)
        .arg(text));
    // Normalised to 1 dB below full scale: loud speech is the hard case for talk-off.
    run(Command::new("sox")
        .arg(&wav)
        .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&raw)
        .args(["norm", "-1"]));
    read_raw(&raw)
}

fn music(dir: &Path, i: usize) -> Vec<i16> {
    let (_, channels, rate, synth) = MUSIC[i];
    let raw = dir.join(format!("music{i}.raw"));
    let mut cmd = Command::new("sox");
    cmd.args(["-r", &rate.to_string(), "-c", &channels.to_string(), "-n"])
        .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&raw)
        .args(["synth", &MUSIC_SECONDS.to_string()])
        .args(synth.split_whitespace());
    if channels > 1 {
        cmd.args(["remix", "-"]);
    }
    run(cmd.args(["norm", "-1"]));
    read_raw(&raw)
}

/// Key-downs reported over `samples`: (digit, seconds).
fn digits_in(samples: &[i16]) -> Vec<(char, f64)> {
    let mut det = DtmfDetector::new();
    let mut found = Vec::new();
    let mut on_event = |e: DtmfEvent| {
        if let DtmfEvent::KeyDown { digit, at_sample } = e {
            found.push((digit, at_sample as f64 / 8000.0));
        }
    };
    det.process(samples, &mut on_event);
    det.finish(&mut on_event);
    found
}

/// What one generated signal gave.
struct Analysed {
    category: &'static str,
    name: String,
    seconds: f64,
    digits: Vec<(char, f64)>,
}

#[test]
fn no_digit_in_five_minutes_of_speech_and_a_minute_of_music() {
    require("espeak-ng", "espeak-ng");
    require("sox", "sox");
    let dir = tempfile::tempdir().unwrap();
    let jobs: Vec<(&'static str, usize)> = (0..SPEECH.len())
        .map(|i| ("speech", i))
        .chain((0..MUSIC.len()).map(|i| ("music", i)))
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Analysed>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(category, i)) = jobs.get(k) else {
                        break;
                    };
                    let (samples, name) = if category == "speech" {
                        (speech(dir.path(), i), SPEECH[i].0.to_string())
                    } else {
                        (music(dir.path(), i), MUSIC[i].0.to_string())
                    };
                    let analysed = Analysed {
                        category,
                        name,
                        seconds: samples.len() as f64 / 8000.0,
                        digits: digits_in(&samples),
                    };
                    results.lock().unwrap().push(analysed);
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let total = |c: &str| -> f64 {
        results
            .iter()
            .filter(|r| r.category == c)
            .map(|r| r.seconds)
            .sum()
    };
    let (speech_s, music_s) = (total("speech"), total("music"));
    println!(
        "talk-off: analysed {speech_s:.1} s of speech and {music_s:.1} s of music-like signals"
    );
    for r in &results {
        println!(
            "  {:<7} {:<45} {:>6.1} s  {} digit(s)",
            r.category,
            r.name,
            r.seconds,
            r.digits.len()
        );
    }
    let falsely: Vec<String> = results
        .iter()
        .filter(|r| !r.digits.is_empty())
        .map(|r| format!("{} {}: {:?}", r.category, r.name, r.digits))
        .collect();
    assert!(
        speech_s >= 300.0,
        "only {speech_s:.1} s of speech generated; the test needs at least 300 s"
    );
    assert!(
        music_s >= 60.0,
        "only {music_s:.1} s of music-like signals; the test needs at least 60 s"
    );
    assert!(
        falsely.is_empty(),
        "digits reported (talk-off): {falsely:#?}"
    );
}
