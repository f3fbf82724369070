//! The op profiler: forward ops and their backward are attributed to the
//! scope the forward ran in, with call counts and bytes allocated.

use flowtensor::profile::{self, Phase};
use flowtensor::{DType, Device, Generator};

#[test]
fn ops_and_their_backward_are_attributed_to_scopes() {
    let mut gen = Generator::new(3);
    let x = gen
        .randn(&[32, 16], DType::F64, Device::Cpu)
        .unwrap()
        .as_variable();
    let session = profile::Session::start();
    let y = profile::scope("outer", || {
        let h = x.exp()?;
        profile::scope("inner", || h.tanh()?.sum_all())
    })
    .unwrap();
    y.backward().unwrap();
    let report = session.finish();
    // other tests of this binary may run ops meanwhile: look for ours only
    let find = |scope: &str, phase: Phase, op: &str| {
        report
            .entries
            .iter()
            .find(|e| e.scope == scope && e.phase == phase && e.op == op)
            .unwrap_or_else(|| panic!("no {scope} {phase:?} {op} in\n{}", report.table()))
    };
    let exp = find("outer", Phase::Forward, "unary:exp");
    assert_eq!(exp.calls, 1);
    assert_eq!(exp.bytes, 32 * 16 * 8);
    assert_eq!(find("outer/inner", Phase::Forward, "unary:tanh").calls, 1);
    assert_eq!(find("outer/inner", Phase::Forward, "reduce:sum").calls, 1);
    // exp's backward multiplies by its output; tanh's runs in the inner scope
    assert!(find("outer", Phase::Backward, "binary:mul").calls >= 1);
    assert!(find("outer/inner", Phase::Backward, "binary:mul").calls >= 1);
    assert!(report.wall >= report.op_time());
    let by_scope = report.by_scope();
    assert!(by_scope
        .iter()
        .any(|e| e.scope == "outer/inner" && e.phase == Phase::Backward));
    let table = report.table();
    assert!(
        table.contains("unary:exp") && table.contains("(outside ops)"),
        "{table}"
    );
    // nothing is recorded without a session
    let _ = x.exp().unwrap();
    assert!(!profile::is_running());
}
