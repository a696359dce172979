//! Metrics of predicted classes (value segments) against actual ones. Classes are 0-based labels;
//! the number of classes K is 1 + the largest label in either slice.

use super::{mean, paired};

/// `matrix[actual][predicted]` = number of customers; K × K (empty for no customers).
pub fn confusion_matrix(predicted: &[u32], actual: &[u32]) -> Vec<Vec<u64>> {
    paired(predicted, actual);
    let classes = predicted.iter().chain(actual).max().map_or(0, |&k| k as usize + 1);
    let mut matrix = vec![vec![0; classes]; classes];
    for (&p, &a) in predicted.iter().zip(actual) {
        matrix[a as usize][p as usize] += 1;
    }
    matrix
}

/// Share of customers whose class is predicted exactly. NaN for no customers.
pub fn accuracy(predicted: &[u32], actual: &[u32]) -> f64 {
    paired(predicted, actual);
    mean(predicted.iter().zip(actual).map(|(p, a)| f64::from(u8::from(p == a))))
}

/// Unweighted mean over classes of F1 = 2·TP / (2·TP + FP + FN), over the classes that occur —
/// actually or predicted; a class that does neither has no F1 and does not count (scikit-learn
/// would count it as 0). NaN for no customers.
pub fn macro_f1(predicted: &[u32], actual: &[u32]) -> f64 {
    let matrix = confusion_matrix(predicted, actual);
    let f1s: Vec<f64> = (0..matrix.len())
        .filter_map(|k| {
            let actual_k: u64 = matrix[k].iter().sum();
            let predicted_k: u64 = matrix.iter().map(|row| row[k]).sum();
            // 2·TP + FP + FN = (TP + FN) + (TP + FP).
            let occurs = actual_k + predicted_k > 0;
            occurs.then(|| 2.0 * matrix[k][k] as f64 / (actual_k + predicted_k) as f64)
        })
        .collect();
    mean(f1s.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREDICTED: [u32; 6] = [0, 0, 1, 2, 2, 2];
    const ACTUAL: [u32; 6] = [0, 1, 1, 2, 2, 0];

    #[test]
    fn confusion_matrix_rows_are_actual_classes() {
        assert_eq!(confusion_matrix(&PREDICTED, &ACTUAL), [[1, 0, 1], [1, 1, 0], [0, 0, 2]]);
        assert!(confusion_matrix(&[], &[]).is_empty());
    }

    #[test]
    fn accuracy_and_macro_f1_by_hand() {
        assert_eq!(accuracy(&PREDICTED, &ACTUAL), 4.0 / 6.0);
        // F1 per class: 0: 2·1/(2+2) = .5; 1: 2·1/(2+1) = 2/3; 2: 2·2/(2+3) = .8.
        let want = (0.5 + 2.0 / 3.0 + 0.8) / 3.0;
        assert!((macro_f1(&PREDICTED, &ACTUAL) - want).abs() < 1e-15);
    }

    #[test]
    fn classes_that_never_occur_do_not_count() {
        // Class 1 occurs nowhere; classes 0 and 2 are perfect.
        assert_eq!(macro_f1(&[0, 2, 2], &[0, 2, 2]), 1.0);
        assert_eq!(confusion_matrix(&[0, 2], &[0, 2])[1], [0, 0, 0]);
    }

    #[test]
    fn single_class_and_empty_inputs() {
        assert_eq!(macro_f1(&[3, 3], &[3, 3]), 1.0);
        assert!(accuracy(&[], &[]).is_nan());
        assert!(macro_f1(&[], &[]).is_nan());
    }
}
