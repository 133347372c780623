//! Image references as pods and configs write them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pullprobe::reference::ImageRef;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = ImageRef::parse(s) {
        // A parsed reference renders and re-parses to itself.
        let again = ImageRef::parse(&r.to_string()).expect("rendered reference parses");
        assert_eq!(again.to_string(), r.to_string());
        let _ = r.repository();
        let _ = r.registry_host();
    }
});
